"""Finding the metadata in a file without decoding a pixel: XMP packets, EXIF blocks, PNG text
chunks, comments, and whether a C2PA store is embedded.

JPEG segments, PNG chunks, WebP (RIFF) chunks and ISO BMFF boxes (MP4, MOV, HEIF) are walked
here, by their headers, skipping the image and video data by seeking; GIF and TIFF go through
Pillow's header parsing. Every walk is bounded: at most MAX_STRUCTURES headers, at most
MAX_ITEM_BYTES per item read and MAX_METADATA_BYTES in all. A malformed file ends its walk
with a line in `errors`; nothing here raises for bad input.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from PIL import Image

MAX_STRUCTURES = 10_000
"""Segments, chunks or boxes walked in one file before the walk gives up."""

MAX_ITEM_BYTES = 4 * 1024 * 1024
"""Largest single metadata item read (an XMP packet, a PNG text chunk after decompression, an
EXIF block): generation tools write a prompt and a workflow, not megabytes."""

MAX_METADATA_BYTES = 16 * 1024 * 1024
"""All metadata read from one file together."""

JPEG_XMP = b"http://ns.adobe.com/xap/1.0/\x00"
JPEG_EXIF = b"Exif\x00\x00"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_XMP_KEY = "XML:com.adobe.xmp"
BMFF_XMP_UUID = bytes.fromhex("be7acfcb97a942e89c71999491e3afac")
BMFF_C2PA_UUID = bytes.fromhex("d8fec3d61b0e483c92975828877ec481")
BMFF_TOP_LEVEL = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"meta"}
HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
AVIF_BRANDS = {b"avif", b"avis"}


@dataclass(slots=True)
class Metadata:
    container: str = "unknown"
    """"jpeg", "png", "webp", "gif", "tiff", "bmff", "avi", "matroska" or "unknown"."""
    mime: str | None = None
    """The MIME type to hand the C2PA reader; None when it does not read this container."""
    xmp: list[bytes] = field(default_factory=list)
    exif: list[bytes] = field(default_factory=list)
    texts: list[tuple[str, str]] = field(default_factory=list)
    """PNG tEXt/zTXt/iTXt (key, text), in file order."""
    comments: list[str] = field(default_factory=list)
    c2pa_embedded: bool = False
    """The container holds a JUMBF/C2PA block (JPEG APP11, PNG caBX, WebP C2PA, BMFF C2PA uuid)."""
    sources: list[str] = field(default_factory=list)
    """What this container can carry and was looked at: "xmp", "exif", "png-text", "comment"."""
    errors: list[str] = field(default_factory=list)
    _budget: int = MAX_METADATA_BYTES

    def take(self, n: int, what: str) -> bool:
        """Account for reading n bytes of metadata; False (and an error) when over a cap."""
        if n > MAX_ITEM_BYTES:
            self.errors.append(f"{what}: {n:,} bytes, over the cap of {MAX_ITEM_BYTES:,}: skipped")
            return False
        if n > self._budget:
            self.errors.append(f"{what}: the file's metadata is over {MAX_METADATA_BYTES:,} bytes: skipped")
            return False
        self._budget -= n
        return True


def sniff(head: bytes) -> tuple[str, str | None]:
    """(container, mime for the C2PA reader) from a file's first 32 bytes."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg", "image/jpeg"
    if head.startswith(PNG_SIGNATURE):
        return "png", "image/png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp", "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi", "video/avi"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif", "image/gif"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff", "image/tiff"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska", None
    if head[4:8] in BMFF_TOP_LEVEL:
        if head[4:8] != b"ftyp":
            return "bmff", "video/quicktime"
        brand = head[8:12]
        if brand == b"qt  ":
            return "bmff", "video/quicktime"
        if brand in AVIF_BRANDS:
            return "bmff", "image/avif"
        if brand in HEIF_BRANDS:
            return "bmff", "image/heic"
        return "bmff", "video/mp4"
    return "unknown", None


def scan(path: Path) -> Metadata:
    """The metadata of the file at `path` (whose size the caller has already capped)."""
    meta = Metadata()
    try:
        with open(path, "rb") as f:
            meta.container, meta.mime = sniff(f.read(32))
            f.seek(0)
            walk = _WALKS.get(meta.container)
            if walk is not None:
                walk(f, meta)
    except (OSError, EOFError, ValueError, struct.error) as e:
        meta.errors.append(f"{meta.container}: the file cannot be walked ({e})")
    return meta


# --- JPEG -----------------------------------------------------------------------------------

def _jpeg(f: BinaryIO, meta: Metadata) -> None:
    meta.sources += ["xmp", "exif", "comment"]
    f.seek(2)
    for _ in range(MAX_STRUCTURES):
        b = f.read(1)
        if not b:
            return
        if b != b"\xff":
            meta.errors.append("jpeg: marker expected, found data: walk stopped")
            return
        marker = f.read(1)
        while marker == b"\xff":  # fill bytes
            marker = f.read(1)
        if not marker:
            return
        m = marker[0]
        if m == 0xD8 or m == 0x01 or 0xD0 <= m <= 0xD7:
            continue  # no length
        if m in (0xD9, 0xDA):
            return  # end of image, start of scan: the metadata is before
        raw = f.read(2)
        if len(raw) < 2:
            meta.errors.append("jpeg: truncated segment header")
            return
        length = struct.unpack(">H", raw)[0] - 2
        if length < 0:
            meta.errors.append("jpeg: segment length below 2: walk stopped")
            return
        if m in (0xE1, 0xEB, 0xFE):  # APP1 (EXIF, XMP), APP11 (JUMBF: C2PA), COM
            payload = f.read(length)
            if len(payload) < length:
                meta.errors.append(f"jpeg: truncated segment 0x{m:02X}")
                return
            _jpeg_segment(m, payload, meta)
        else:
            f.seek(length, io.SEEK_CUR)
    meta.errors.append(f"jpeg: more than {MAX_STRUCTURES} segments: walk stopped")


def _jpeg_segment(m: int, payload: bytes, meta: Metadata) -> None:
    if m == 0xEB:
        if payload[:2] == b"JP":
            meta.c2pa_embedded = True
    elif m == 0xFE:
        if meta.take(len(payload), "jpeg comment"):
            meta.comments.append(payload.decode("utf-8", "replace"))
    elif payload.startswith(JPEG_EXIF):
        if not meta.exif and meta.take(len(payload), "jpeg exif"):
            meta.exif.append(payload)
    elif payload.startswith(JPEG_XMP) and meta.take(len(payload), "jpeg xmp"):
        meta.xmp.append(payload[len(JPEG_XMP):])


# --- PNG ------------------------------------------------------------------------------------

def _png(f: BinaryIO, meta: Metadata) -> None:
    meta.sources += ["xmp", "exif", "png-text"]
    f.seek(len(PNG_SIGNATURE))
    for _ in range(MAX_STRUCTURES):
        head = f.read(8)
        if len(head) < 8:
            if head:
                meta.errors.append("png: truncated chunk header")
            return
        length, ctype = struct.unpack(">I4s", head)
        if length > 0x7FFFFFFF:
            meta.errors.append("png: chunk length over 2^31: walk stopped")
            return
        if ctype in (b"tEXt", b"zTXt", b"iTXt", b"eXIf"):
            if not meta.take(length, f"png {ctype.decode()}"):
                f.seek(length + 4, io.SEEK_CUR)
                continue
            data = f.read(length)
            if len(data) < length:
                meta.errors.append(f"png: truncated {ctype.decode()} chunk")
                return
            f.seek(4, io.SEEK_CUR)  # CRC, not checked: a wrong one hides nothing from us
            _png_chunk(ctype, data, meta)
        elif ctype == b"caBX":
            meta.c2pa_embedded = True
            f.seek(length + 4, io.SEEK_CUR)
        elif ctype == b"IEND":
            return
        else:
            f.seek(length + 4, io.SEEK_CUR)
    meta.errors.append(f"png: more than {MAX_STRUCTURES} chunks: walk stopped")


def _inflate(data: bytes, what: str, meta: Metadata) -> bytes | None:
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, MAX_ITEM_BYTES)
    except zlib.error as e:
        meta.errors.append(f"{what}: bad compressed text ({e})")
        return None
    if d.unconsumed_tail:
        meta.errors.append(f"{what}: over {MAX_ITEM_BYTES:,} bytes decompressed: skipped")
        return None
    if not meta.take(len(out), what):
        return None
    return out


def _png_chunk(ctype: bytes, data: bytes, meta: Metadata) -> None:
    if ctype == b"eXIf":
        if not meta.exif:
            meta.exif.append(data)
        return
    key_raw, sep, rest = data.partition(b"\x00")
    if not sep or not 1 <= len(key_raw) <= 79:
        meta.errors.append(f"png: {ctype.decode()} chunk without a valid keyword")
        return
    key = key_raw.decode("latin-1")
    if ctype == b"tEXt":
        text = rest.decode("latin-1")
    elif ctype == b"zTXt":
        raw = _inflate(rest[1:], f"png zTXt {key!r}", meta)
        if raw is None:
            return
        text = raw.decode("latin-1")
    else:  # iTXt: compression flag, method, language tag \0, translated keyword \0, text
        if len(rest) < 2:
            meta.errors.append(f"png: iTXt {key!r} truncated")
            return
        compressed = rest[0] == 1
        _lang, _, rest2 = rest[2:].partition(b"\x00")
        _tkey, _, body = rest2.partition(b"\x00")
        if compressed:
            raw = _inflate(body, f"png iTXt {key!r}", meta)
            if raw is None:
                return
            body = raw
        if key == PNG_XMP_KEY:
            meta.xmp.append(body)
            return
        text = body.decode("utf-8", "replace")
    meta.texts.append((key, text))


# --- WebP (RIFF) ----------------------------------------------------------------------------

def _webp(f: BinaryIO, meta: Metadata) -> None:
    meta.sources += ["xmp", "exif"]
    f.seek(12)
    for _ in range(MAX_STRUCTURES):
        head = f.read(8)
        if len(head) < 8:
            return
        fourcc, size = struct.unpack("<4sI", head)
        padded = size + (size & 1)
        if fourcc in (b"EXIF", b"XMP "):
            if not meta.take(size, f"webp {fourcc.decode().strip()}"):
                f.seek(padded, io.SEEK_CUR)
                continue
            data = f.read(size)
            if len(data) < size:
                meta.errors.append(f"webp: truncated {fourcc.decode().strip()} chunk")
                return
            f.seek(padded - size, io.SEEK_CUR)
            if fourcc == b"XMP ":
                meta.xmp.append(data)
            elif not meta.exif:
                meta.exif.append(data)
        else:
            if fourcc == b"C2PA":
                meta.c2pa_embedded = True
            f.seek(padded, io.SEEK_CUR)
    meta.errors.append(f"webp: more than {MAX_STRUCTURES} chunks: walk stopped")


# --- ISO BMFF (MP4, MOV, HEIF, AVIF) ------------------------------------------------------------

def _bmff_boxes(f: BinaryIO, start: int, end: int | None, meta: Metadata, budget: list[int]):
    """(type, payload offset, payload size) of the boxes between start and end (None: EOF)."""
    pos = start
    while end is None or pos + 8 <= end:
        budget[0] -= 1
        if budget[0] < 0:
            meta.errors.append(f"bmff: more than {MAX_STRUCTURES} boxes: walk stopped")
            return
        f.seek(pos)
        head = f.read(8)
        if len(head) < 8:
            return
        size, btype = struct.unpack(">I4s", head)
        header = 8
        if size == 1:
            large = f.read(8)
            if len(large) < 8:
                meta.errors.append("bmff: truncated box header")
                return
            size = struct.unpack(">Q", large)[0]
            header = 16
        elif size == 0:  # to the end of the enclosing box or file
            f.seek(0, io.SEEK_END)
            size = (end if end is not None else f.tell()) - pos
        if size < header or (end is not None and pos + size > end):
            meta.errors.append(f"bmff: box {btype!r} has an impossible size {size}: walk stopped")
            return
        yield btype, pos + header, size - header
        pos += size


def _bmff(f: BinaryIO, meta: Metadata) -> None:
    meta.sources += ["xmp"]
    budget = [MAX_STRUCTURES]
    for btype, off, size in list(_bmff_boxes(f, 0, None, meta, budget)):
        if btype == b"uuid" and size >= 16:
            f.seek(off)
            usertype = f.read(16)
            if usertype == BMFF_C2PA_UUID:
                meta.c2pa_embedded = True
            elif usertype == BMFF_XMP_UUID:
                _bmff_xmp(f, off + 16, size - 16, meta)
        elif btype == b"moov":
            for t2, off2, size2 in list(_bmff_boxes(f, off, off + size, meta, budget)):
                if t2 == b"udta":
                    for t3, off3, size3 in list(_bmff_boxes(f, off2, off2 + size2, meta, budget)):
                        if t3 == b"XMP_":
                            _bmff_xmp(f, off3, size3, meta)


def _bmff_xmp(f: BinaryIO, off: int, size: int, meta: Metadata) -> None:
    if not meta.take(size, "bmff xmp"):
        return
    f.seek(off)
    data = f.read(size)
    if len(data) < size:
        meta.errors.append("bmff: truncated XMP box")
        return
    meta.xmp.append(data)


# --- GIF, TIFF: Pillow's header parsing -------------------------------------------------------

def _pillow(f: BinaryIO, meta: Metadata) -> None:
    fmt = {"gif": "GIF", "tiff": "TIFF"}[meta.container]
    meta.sources += ["comment"] if fmt == "GIF" else ["xmp", "exif"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(f, formats=[fmt]) as im:
                if isinstance(comment := im.info.get("comment"), bytes) and \
                        meta.take(len(comment), "gif comment"):
                    meta.comments.append(comment.decode("utf-8", "replace"))
                if fmt == "TIFF":
                    xmp = im.info.get("xmp")
                    if isinstance(xmp, bytes) and meta.take(len(xmp), "tiff xmp"):
                        meta.xmp.append(xmp)
                    exif = im.getexif()
                    if len(exif):
                        meta.exif.append(exif.tobytes())
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, Image.DecompressionBombError) as e:
        meta.errors.append(f"{meta.container}: header unreadable ({e})")


_WALKS = {"jpeg": _jpeg, "png": _png, "webp": _webp, "bmff": _bmff, "gif": _pillow, "tiff": _pillow}
