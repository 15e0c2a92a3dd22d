"""The known-fakes bank: entries (add, remove, import, export) and the index every worker matches
uploads against.

Matching (`BankIndex.match`), with Meta's thresholds (detector/perceptual.py):
- the exact bytes (sha256): a match;
- an image's PDQ hash, searched with its 8 rotations and mirror images, against image entries
  and the frames of video entries: a match at <= 31 bits of 256, a near miss at 32-63 (only
  hashes of quality >= 50 on both sides);
- a video's frames against video entries: a match when >= 80% of its usable frames find a frame of
  the entry within 31 bits (ThreatExchange's vPDQ rule), a near miss when they do within 63;
  a frame within 31 bits of an image entry (a known fake still shown in the video) is a match.

The index is faiss's exhaustive binary index over every PDQ hash in the bank (IndexBinaryFlat:
SIMD XOR and popcount, exact, 32 bytes a hash; one search at the near-miss radius answers both
questions), on one thread: bench/bank.py measured it against multi-index hashing, which is faster
at 31 bits but 100x slower at 63, and against numpy brute force. Built from the database and
rebuilt when the bank's latest change moves (one cheap query per job). Exchange format: the CSV of `threatexchange dataset --csv`
(signal_type,signal_str,collab,category,tags), which ThreatExchange and HMA users share.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import threading
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import IO, Any

import numpy as np
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from core.lifecycle import audit
from core.models import BankEntry, BankSource, Decision, Status, Upload, utcnow
from detector.perceptual import (
    PDQ_MATCH_DISTANCE,
    PDQ_MIN_QUALITY,
    PDQ_NEAR_DISTANCE,
    VPDQ_QUERY_MATCH_PERCENT,
    MediaHashes,
    PdqHash,
    VpdqFrame,
    check_pdq_hex,
    hex_to_bytes,
    usable,
)

log = logging.getLogger(__name__)

EXCHANGE_FIELDS = ("signal_type", "signal_str", "collab", "category", "tags")
"""The columns of `threatexchange dataset --csv`."""
EXCHANGE_COLLAB = "verity"
EXCHANGE_CATEGORY = "POSITIVE_CLASS"
"""ThreatExchange's opinion category for "this is the bad thing"."""
EXCHANGE_TAG = "deepfake"
NOTE_MAX = 2000


class BankError(ValueError):
    """A bank operation that cannot be done; the message says why."""


@dataclass(frozen=True)
class Match:
    entry_id: str
    algorithm: str
    """"sha256", "pdq" (an image, or a video frame against an image entry), "vpdq" (a video)."""
    distance: int | None
    """Bits of 256 (PDQ; for a video the median over its matched frames); 0 for sha256."""
    match_percent: float | None
    """vPDQ: the share of the upload's usable frames that found a partner in the entry."""
    source: str
    """The entry's source: decision, cli or import."""
    near: bool = False
    """A near miss: routed to review, not blocked."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def reason(self) -> str:
        what = "near_known_fake" if self.near else "known_fake"
        how = (f"{self.algorithm} distance {self.distance}" if self.match_percent is None
               else f"{self.match_percent:.0f}% of frames within the vPDQ distance")
        return f"{what}: bank entry {self.entry_id} ({how})"


# --- the index -------------------------------------------------------------------------------

@dataclass
class BankIndex:
    """The active entries of the bank, ready to match: built once per change, read by one thread."""

    version: datetime | None = None
    by_sha: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    frames: dict[str, int] = field(default_factory=dict)
    """Usable distinct frames of each video entry (for its compared-match share)."""
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    """Entry id of each PDQ hash in the faiss index, by position."""
    faiss_index: Any = None

    @classmethod
    def build(cls, entries: Iterable[BankEntry], version: datetime | None = None) -> BankIndex:
        idx = cls(version=version)
        codes: list[np.ndarray] = []
        owners: list[str] = []
        for e in entries:
            idx.sources[e.id] = e.source
            idx.kinds[e.id] = e.kind
            if e.sha256:
                idx.by_sha[e.sha256] = e.id
            if e.pdq and (e.pdq_quality or 0) >= PDQ_MIN_QUALITY:
                for h in [e.pdq, *(e.pdq_trims or [])]:
                    codes.append(hex_to_bytes(h))
                    owners.append(e.id)
            if e.vpdq:
                good = usable([VpdqFrame.parse(f) for f in e.vpdq])
                idx.frames[e.id] = len(good)
                for f in good:
                    codes.append(hex_to_bytes(f.hex))
                    owners.append(e.id)
        idx.rows = np.array(owners, dtype=object)
        if codes:
            idx.faiss_index = new_faiss_index(np.stack(codes))
        return idx

    def __len__(self) -> int:
        return len(self.sources)

    def search(self, hashes: list[str], radius: int = PDQ_NEAR_DISTANCE) -> list[list[tuple[str, int]]]:
        """For each query hash, the (entry id, distance) of every bank hash within `radius`."""
        if self.faiss_index is None or not hashes:
            return [[] for _ in hashes]
        q = np.stack([hex_to_bytes(h) for h in hashes])
        lims, dist, ids = self.faiss_index.range_search(q, radius + 1)
        return [[(self.rows[ids[j]], int(dist[j])) for j in range(lims[i], lims[i + 1])]
                for i in range(len(hashes))]

    def match(self, sha256: str | None, hashes: MediaHashes | None) -> list[Match]:
        """What the bank knows of these bytes and hashes: matches first, then near misses, one
        per entry, best first."""
        found: dict[str, Match] = {}
        if sha256 and sha256 in self.by_sha:
            e = self.by_sha[sha256]
            found[e] = Match(e, "sha256", 0, None, self.sources[e])
        if hashes is not None and hashes.pdq:
            self._match_image(hashes.pdq, found)
        if hashes is not None and hashes.vpdq:
            self._match_video(hashes.vpdq, found)
        return sorted(found.values(), key=lambda m: (m.near, m.algorithm != "sha256", m.distance or 0))

    def _match_image(self, variants: list[PdqHash], found: dict[str, Match]) -> None:
        if variants[0].quality < PDQ_MIN_QUALITY:
            return
        best: dict[str, int] = {}
        for hits in self.search([v.hex for v in variants]):
            for entry, d in hits:
                best[entry] = min(d, best.get(entry, 999))
        for entry, d in best.items():
            near = d > PDQ_MATCH_DISTANCE
            if near and self.kinds[entry] == "video":
                continue  # a still near one frame of a video: too weak to say anything
            if entry not in found:
                found[entry] = Match(entry, "pdq", d, None, self.sources[entry], near=near)

    def _match_video(self, frames: list[VpdqFrame], found: dict[str, Match]) -> None:
        query = usable(frames)
        if not query:
            return
        close: dict[str, list[int]] = {}  # entry -> per query frame, its best distance
        for i, hits in enumerate(self.search([f.hex for f in query])):
            best: dict[str, int] = {}
            for entry, d in hits:
                best[entry] = min(d, best.get(entry, 999))
            for entry, d in best.items():
                close.setdefault(entry, [999] * len(query))[i] = d
        for entry, dists in close.items():
            if entry in found:
                continue
            within = [d for d in dists if d <= PDQ_MATCH_DISTANCE]
            if self.kinds[entry] == "image":
                if within:  # a known fake still, shown in this video
                    found[entry] = Match(entry, "pdq", min(within), None, self.sources[entry])
                continue
            pct = 100.0 * len(within) / len(query)
            pct_near = 100.0 * sum(d <= PDQ_NEAR_DISTANCE for d in dists) / len(query)
            if pct >= VPDQ_QUERY_MATCH_PERCENT:
                found[entry] = Match(entry, "vpdq", int(np.median(within)), round(pct, 1), self.sources[entry])
            elif pct_near >= VPDQ_QUERY_MATCH_PERCENT:
                near = [d for d in dists if d <= PDQ_NEAR_DISTANCE]
                found[entry] = Match(entry, "vpdq", int(np.median(near)), round(pct_near, 1), self.sources[entry],
                                     near=True)


def new_faiss_index(codes: np.ndarray):
    """An exact index of 256-bit codes. faiss runs one thread: a single query over a million
    hashes takes about 2 ms on one core, and 10x longer when OpenMP wakes a second thread for it."""
    import faiss

    faiss.omp_set_num_threads(1)
    index = faiss.IndexBinaryFlat(256)
    index.add(np.ascontiguousarray(codes, dtype=np.uint8))
    return index


class BankCache:
    """The bank's index as one process keeps it: rebuilt when the bank changed since (the
    latest `updated_at` of its entries, one indexed query), shared by the process's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._index = BankIndex()
        self._loaded = False

    def get(self, session: Session) -> BankIndex:
        latest = session.scalar(select(func.max(BankEntry.updated_at)))
        if self._loaded and latest == self._index.version:
            return self._index
        with self._lock:
            if not (self._loaded and latest == self._index.version):
                rows = session.scalars(select(BankEntry).where(BankEntry.removed_at.is_(None))).all()
                self._index = BankIndex.build(rows, version=latest)
                self._loaded = True
                log.info("bank index built: %d entries", len(self._index))
        return self._index


# --- entries ---------------------------------------------------------------------------------

def add_entry(session: Session, kind: str, *, source: str, actor: str, sha256: str | None = None,
              hashes: MediaHashes | None = None, note: str | None = None, upload_id: str | None = None,
              decision_id: int | None = None, request_id: str | None = None) -> tuple[BankEntry, bool]:
    """Add an entry (audited): (the entry, True). An active entry with the same bytes or the same
    PDQ hash is returned instead: (that entry, False)."""
    if source not in BankSource.ALL:
        raise BankError(f"source must be one of {', '.join(BankSource.ALL)}")
    pdq = hashes.pdq[0] if hashes is not None and hashes.pdq else None
    vpdq = [str(f) for f in hashes.vpdq] if hashes is not None and hashes.vpdq else None
    if not (sha256 or pdq or vpdq):
        raise BankError("an entry needs the bytes' sha256 or a perceptual hash")
    signal = f"pdq:{pdq.hex}" if pdq else f"vpdq:{json.dumps(vpdq)}" if vpdq else f"sha256:{sha256}"
    fingerprint = hashlib.sha256(signal.encode()).hexdigest()
    same = [BankEntry.fingerprint == fingerprint] + ([BankEntry.sha256 == sha256] if sha256 else [])
    existing = session.scalar(select(BankEntry).where(BankEntry.removed_at.is_(None), or_(*same)).limit(1))
    if existing is not None:
        return existing, False
    trims = [t.hex for t in hashes.trims if t.quality >= PDQ_MIN_QUALITY] if hashes is not None else []
    e = BankEntry(kind=kind, sha256=sha256, pdq=pdq.hex if pdq else None, pdq_quality=pdq.quality if pdq else None,
                  pdq_trims=trims or None, vpdq=vpdq, fingerprint=fingerprint, source=source, note=(note or "").strip()[:NOTE_MAX] or None, upload_id=upload_id,
                  decision_id=decision_id, created_by=actor)
    session.add(e)
    session.flush()
    audit(session, "bank.added", actor, upload_id=upload_id, request_id=request_id,
          detail={"entry_id": e.id, "kind": kind, "source": source, "decision_id": decision_id,
                  "pdq": e.pdq, "vpdq_frames": len(vpdq or []), "sha256": sha256, "note": e.note})
    return e, True


def remove_entry(session: Session, entry_id: str, actor: str, reason: str,
                 request_id: str | None = None) -> BankEntry:
    """Take an entry out of matching (audited); the row stays for the audit trail."""
    e = session.get(BankEntry, entry_id) if entry_id.isalnum() and len(entry_id) <= 32 else None
    if e is None:
        raise BankError(f"no bank entry {entry_id}")
    if e.removed_at is None:
        e.removed_at, e.removed_by = utcnow(), actor
        audit(session, "bank.removed", actor, upload_id=e.upload_id, request_id=request_id,
              detail={"entry_id": e.id, "reason": reason, "source": e.source, "decision_id": e.decision_id})
    return e


def find_entries(session: Session, query: str | None = None, *, include_removed: bool = False,
                 limit: int = 50, offset: int = 0) -> list[BankEntry]:
    q = select(BankEntry)
    if not include_removed:
        q = q.where(BankEntry.removed_at.is_(None))
    if query:
        query = query.strip()
        q = q.where(or_(BankEntry.id.startswith(query), BankEntry.note.contains(query),
                        BankEntry.sha256 == query, BankEntry.pdq == query.lower()))
    return list(session.scalars(q.order_by(BankEntry.created_at.desc()).limit(limit).offset(offset)))


# --- from decisions ---------------------------------------------------------------------------

class DecisionCurator:
    """The lifecycle listener that keeps the bank in step with the moderators (subscribed where
    the web app starts): a confirmed fake becomes an entry; a revision away from confirmed fake
    removes the entries that decision made. Each change is an audit event."""

    def __init__(self, settings, engine, storage) -> None:
        self.settings = settings
        self.engine = engine
        self.storage = storage

    def on_status_change(self, upload: Upload, status: str) -> None:
        if status not in Status.VERDICTS:
            return
        with Session(self.engine, expire_on_commit=False) as session:
            decision = session.scalar(select(Decision).where(Decision.upload_id == upload.id)
                                      .order_by(Decision.id.desc()).limit(1))
            if decision is None:
                return
            actor = f"moderator:{decision.moderator}"
            if status == Status.CONFIRMED_FAKE:
                fresh = session.get(Upload, upload.id)
                add_entry(session, fresh.kind, source=BankSource.DECISION, actor=actor, sha256=fresh.sha256,
                          hashes=self._hashes_of(fresh), upload_id=fresh.id, decision_id=decision.id,
                          note=decision.note)
            else:
                for e in session.scalars(select(BankEntry).where(
                        BankEntry.upload_id == upload.id, BankEntry.source == BankSource.DECISION,
                        BankEntry.removed_at.is_(None))):
                    remove_entry(session, e.id, actor, f"decision {decision.id} revised the verdict to {status}")
            session.commit()

    def _hashes_of(self, upload: Upload) -> MediaHashes | None:
        """Hashes for the entry, from the blob (with the picture's border trims); the ones its
        analysis stored when the blob is gone."""
        from detector.perceptual import hash_media

        try:
            with self.storage.local_path(upload.sha256, self.settings.tmp_dir) as path:
                return hash_media(path, upload.kind, for_entry=True)
        except Exception:  # noqa: BLE001 - withdrawn blob, unreadable media: use what the analysis kept
            a = upload.latest_analysis
            stored = MediaHashes.from_dict((a.evidence or {}).get("hashes")) if a is not None else None
            if stored is None:
                log.warning("no perceptual hash for upload %s; its bank entry holds the sha256 only", upload.id)
            return stored


# --- exchange ---------------------------------------------------------------------------------

def export_csv(session: Session, out: IO[str]) -> int:
    """Every active entry as `threatexchange dataset --csv` rows; returns how many rows."""
    w = csv.DictWriter(out, EXCHANGE_FIELDS)
    w.writeheader()
    n = 0
    for e in session.scalars(select(BankEntry).where(BankEntry.removed_at.is_(None)).order_by(BankEntry.created_at)):
        tags = f"{EXCHANGE_TAG} verity-entry:{e.id}"
        for signal_type, signal_str in _signals(e):
            w.writerow({"signal_type": signal_type, "signal_str": signal_str, "collab": EXCHANGE_COLLAB,
                        "category": EXCHANGE_CATEGORY, "tags": tags})
            n += 1
    return n


def _signals(e: BankEntry) -> Iterator[tuple[str, str]]:
    if e.pdq:
        yield "pdq", e.pdq
    if e.vpdq:
        yield "vpdq", json.dumps(e.vpdq)


@dataclass
class ImportReport:
    added: int = 0
    already: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    """Rows not taken, by why (an unknown signal type, a malformed hash, a negative opinion)."""


def import_csv(session: Session, src: IO[str], actor: str, note: str | None = None) -> ImportReport:
    """Rows of `threatexchange dataset --csv` (or any CSV with signal_type and signal_str columns):
    pdq and vpdq signals become entries; others are counted and skipped."""
    report = ImportReport()
    reader = csv.DictReader(src)
    if not reader.fieldnames or not {"signal_type", "signal_str"} <= set(reader.fieldnames):
        raise BankError("the file needs a header with the columns signal_type and signal_str "
                        "(the CSV of `threatexchange dataset --csv`)")
    for row in reader:
        kind = (row.get("signal_type") or "").strip().lower()
        raw = (row.get("signal_str") or "").strip()
        category = (row.get("category") or EXCHANGE_CATEGORY).strip().upper()
        if category == "NEGATIVE_CLASS":
            report.skipped["negative opinion"] = report.skipped.get("negative opinion", 0) + 1
            continue
        try:
            if kind == "pdq":
                hashes = MediaHashes(pdq=[PdqHash(check_pdq_hex(raw), 100)])
                media = "image"
            elif kind == "vpdq":
                hashes = MediaHashes(vpdq=[VpdqFrame.parse(f) for f in json.loads(raw)])
                media = "video"
            else:
                report.skipped[f"signal type {kind or '-'}"] = report.skipped.get(f"signal type {kind or '-'}", 0) + 1
                continue
        except (ValueError, TypeError):
            report.skipped["malformed hash"] = report.skipped.get("malformed hash", 0) + 1
            continue
        _, created = add_entry(session, media, source=BankSource.IMPORT, actor=actor, hashes=hashes,
                               note=note or f"imported: {row.get('collab') or '?'} {row.get('tags') or ''}".strip())
        if created:
            report.added += 1
        else:
            report.already += 1
    return report
