"""`read_provenance`: everything a file declares about its origin, read offline and bounded."""

from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path

from detector.provenance import containers, hints, manifests
from detector.provenance.result import Claim, Provenance

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
"""Largest file read (the caller passes its own upload cap). The C2PA hash check reads the
whole file; the metadata walks read only headers."""

MAX_CLAIMS = 64
"""Claims kept per file, the C2PA ones first."""

KINDS = ("image", "video")

_BAD_INPUT = (OSError, EOFError, ValueError, SyntaxError, struct.error, zlib.error, UnicodeError,
              IndexError, KeyError, OverflowError, RecursionError)
"""What a malformed file can make a parser raise (defusedxml's refusals are ValueErrors, the
XML parser's errors SyntaxErrors). Anything else is a bug here and is let through."""


def read_provenance(path: Path, kind: str, *, trust_anchors: list[Path] | None = None,
                    max_bytes: int = DEFAULT_MAX_BYTES) -> Provenance:
    """What the image or video at `path` says about where it came from.

    `kind` is "image" or "video", as the caller sniffed it; the container is recognised again
    from the bytes, and a disagreement is noted in `errors`. `trust_anchors` are PEM bundles
    (files shipped with Verity or given by the operator): a C2PA manifest is verified only
    when its signing certificate chains to one of them. Nothing is fetched from the network:
    no remote manifest, no OCSP, no timestamp authority (manifests.py says how).

    Reads: C2PA manifests (JPEG, PNG, WebP, GIF, TIFF, HEIF/AVIF, MP4/MOV, AVI), the IPTC
    digital source type in XMP (JPEG, PNG, WebP, TIFF, MP4/MOV), generator and camera hints in
    EXIF, PNG text chunks and JPEG/GIF comments. Pixels are never decoded.

    A file over `max_bytes`, unreadable or malformed gives a Provenance with `errors` (and, for
    broken C2PA data, an unverified claim saying so): nothing raises for a bad file. Raises
    ValueError for a `kind` that is neither "image" nor "video" (a caller's bug).

    The caller's rule, stated here because it matters: `declared_synthetic` routes an item to
    review; no claim, not even a verified camera-origin manifest, clears an item by itself.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    t0 = time.perf_counter()
    prov = Provenance()
    try:
        size = Path(path).stat().st_size
    except OSError as e:
        prov.errors.append(f"file: cannot be read ({e.strerror or e})")
        return prov
    if size == 0:
        prov.errors.append("file: empty")
        return prov
    if size > max_bytes:
        prov.errors.append(f"file: {size:,} bytes, over the cap of {max_bytes:,}: provenance not read")
        return prov

    anchors_pem = None
    if trust_anchors:
        try:
            anchors_pem = manifests.load_trust_anchors(list(trust_anchors))
        except (OSError, ValueError) as e:
            prov.errors.append(f"trust anchors: {e}: nothing can be verified")

    meta = containers.scan(Path(path))
    prov.errors += meta.errors
    sniffed = meta.mime.split("/")[0] if meta.mime else None
    if sniffed in KINDS and sniffed != kind:
        prov.errors.append(f"file: the caller says {kind}, the bytes say {meta.mime} (read as such)")
    t1 = time.perf_counter()

    c2pa_claims: list[Claim] = []
    if meta.mime is not None:
        prov.checked.append("c2pa")
        try:
            c2pa_claims = manifests.read_c2pa(Path(path), meta.mime, anchors_pem,
                                              embedded=meta.c2pa_embedded, errors=prov.errors)
        except _BAD_INPUT as e:
            c2pa_claims = [manifests.unreadable_claim(f"{type(e).__name__}: {e}")]
    t2 = time.perf_counter()

    other: list[Claim] = []
    for packet in meta.xmp:
        try:
            other += hints.xmp_claims(packet)
        except _BAD_INPUT as e:
            prov.errors.append(f"xmp: not readable XML ({type(e).__name__}: {str(e)[:200]})")
    for block in meta.exif:
        try:
            other += hints.exif_claims(block)
        except _BAD_INPUT as e:
            prov.errors.append(f"exif: not readable ({type(e).__name__}: {str(e)[:200]})")
    other += hints.png_text_claims(meta.texts)
    other += hints.comment_claims(meta.comments)
    prov.checked += [s for s in meta.sources if s not in prov.checked]

    claims = c2pa_claims + hints.merge(other)
    if len(claims) > MAX_CLAIMS:
        prov.errors.append(f"claims: {len(claims)} found, the first {MAX_CLAIMS} kept")
        claims = claims[:MAX_CLAIMS]
    prov.claims = claims
    prov.declared_synthetic = any(c.declares == "synthetic" for c in claims)
    prov.declared_capture = any(c.declares == "capture" for c in claims)
    t3 = time.perf_counter()
    prov.timings_ms = {"metadata": round((t1 - t0 + t3 - t2) * 1000, 2), "c2pa": round((t2 - t1) * 1000, 2),
                       "total": round((t3 - t0) * 1000, 2)}
    return prov
