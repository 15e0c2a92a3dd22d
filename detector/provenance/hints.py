"""Unsigned declarations: the IPTC digital source type in XMP, generator and camera hints in
EXIF, PNG text chunks and comments. None of these is ever verified: anyone can write them."""

from __future__ import annotations

import struct
from xml.etree.ElementTree import Element

from defusedxml import ElementTree as SafeET
from PIL import Image

from detector.provenance import vocab
from detector.provenance.result import Claim, Source

EXCERPT_CHARS = 500
"""Characters of a generation tool's text (a prompt, a workflow) kept in a claim's detail."""

NS_IPTC_EXT = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
NS_XMP = "http://ns.adobe.com/xap/1.0/"
NS_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
XMP_DIGITAL_SOURCE_TYPE = f"{{{NS_IPTC_EXT}}}DigitalSourceType"
XMP_CREATOR_TOOL = f"{{{NS_XMP}}}CreatorTool"
RDF_RESOURCE = f"{{{NS_RDF}}}resource"

EXIF_IMAGE_DESCRIPTION = 0x010E
EXIF_MAKE = 0x010F
EXIF_MODEL = 0x0110
EXIF_SOFTWARE = 0x0131
EXIF_ARTIST = 0x013B
EXIF_IFD = 0x8769
EXIF_USER_COMMENT = 0x9286
_EXIF_BAD = (ValueError, SyntaxError, EOFError, OSError, struct.error, KeyError, IndexError, UnicodeError)


def _excerpt(text: str) -> str:
    text = text.strip()
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "…"


def generator_claims(source: Source, field: str, text: str) -> list[Claim]:
    """A "generator" claim when `text` names a known generator or holds A1111 parameters."""
    name = vocab.known_generator(text)
    if name is None and vocab.SD_PARAMETERS.search(text):
        name = "Stable Diffusion WebUI"
    if name is None:
        return []
    return [Claim(source=source, kind="generator", value=name, declares="synthetic",
                  detail={"field": field, "excerpt": _excerpt(text)})]


def source_type_claim(source: Source, value: str, detail: dict) -> Claim:
    return Claim(source=source, kind="digital_source_type", value=vocab.canonical_source_type(value),
                 declares=vocab.declares(value), detail={"as_written": value.strip(), **detail})


# --- XMP ------------------------------------------------------------------------------------

def _values(el: Element) -> list[str]:
    """An XMP property's values: its text, an rdf:resource, or the rdf:li of a Bag/Seq/Alt."""
    if el.get(RDF_RESOURCE):
        return [el.get(RDF_RESOURCE, "")]
    if el.text and el.text.strip():
        return [el.text.strip()]
    return [li.text.strip() for li in el.iter(f"{{{NS_RDF}}}li") if li.text and li.text.strip()]


def xmp_claims(packet: bytes) -> list[Claim]:
    """Claims from one XMP packet: Iptc4xmpExt:DigitalSourceType, xmp:CreatorTool.

    Parsed with defusedxml (no DTDs, no entity expansion); raises ValueError or SyntaxError
    (xml ParseError) for a packet that is not XML."""
    packet = packet.strip(b"\x00 \t\r\n")
    root = SafeET.fromstring(packet, forbid_dtd=True)
    found: dict[str, list[str]] = {XMP_DIGITAL_SOURCE_TYPE: [], XMP_CREATOR_TOOL: []}
    for el in root.iter():
        for name, bucket in found.items():
            if (v := el.get(name)) and v.strip():
                bucket.append(v.strip())
            if el.tag == name:
                bucket.extend(_values(el))
    claims = []
    for value in dict.fromkeys(found[XMP_DIGITAL_SOURCE_TYPE]):
        claims.append(source_type_claim("xmp", value, {"field": "Iptc4xmpExt:DigitalSourceType"}))
    for tool in dict.fromkeys(found[XMP_CREATOR_TOOL]):
        claims += generator_claims("xmp", "xmp:CreatorTool", tool) or [
            Claim(source="xmp", kind="software", value=_excerpt(tool), detail={"field": "xmp:CreatorTool"})]
    return claims


# --- EXIF -----------------------------------------------------------------------------------

def _text(value) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        value = value.strip("\x00 \t\r\n")
        return value or None
    return None


def _user_comment(raw) -> str | None:
    """EXIF UserComment: an 8-byte character code, then the text."""
    if isinstance(raw, str):
        return _text(raw)
    if not isinstance(raw, bytes) or len(raw) < 8:
        return None
    code, body = raw[:8], raw[8:]
    if code.startswith(b"UNICODE"):
        # UTF-16 in the byte order of the EXIF block; A1111 writes big-endian.
        be, le = body.decode("utf-16-be", "replace"), body.decode("utf-16-le", "replace")
        return _text(be if be.isascii() or not le.isascii() else le)
    return _text(body)


def exif_claims(block: bytes) -> list[Claim]:
    """Claims from an EXIF block: camera Make/Model, Software (a generator's name, or the
    software that wrote the file), and generator names in the description, artist and user
    comment (where AUTOMATIC1111 writes its parameters in JPEG and WebP)."""
    exif = Image.Exif()
    exif.load(block)
    claims: list[Claim] = []
    make, model = _text(exif.get(EXIF_MAKE)), _text(exif.get(EXIF_MODEL))
    if make or model:
        value = model if make and model and model.lower().startswith(make.lower()) else \
            " ".join(x for x in (make, model) if x)
        claims.append(Claim(source="exif", kind="camera", value=_excerpt(value),
                            detail={"make": make, "model": model}))
    if software := _text(exif.get(EXIF_SOFTWARE)):
        claims += generator_claims("exif", "Software", software) or [
            Claim(source="exif", kind="software", value=_excerpt(software), detail={"field": "Software"})]
    for tag, name in ((EXIF_IMAGE_DESCRIPTION, "ImageDescription"), (EXIF_ARTIST, "Artist")):
        if text := _text(exif.get(tag)):
            claims += generator_claims("exif", name, text)
    try:
        sub = exif.get_ifd(EXIF_IFD)
    except _EXIF_BAD:
        sub = {}
    if text := _user_comment(sub.get(EXIF_USER_COMMENT)):
        claims += generator_claims("exif", "UserComment", text)
    return claims


# --- PNG text, comments -----------------------------------------------------------------------

def png_text_claims(texts: list[tuple[str, str]]) -> list[Claim]:
    """Generation tools' own keys (`parameters`, `prompt`, `workflow`...) and known generators'
    names in Software, Comment, Description and the like."""
    claims: list[Claim] = []
    for key, text in texts:
        tool = vocab.PNG_GENERATOR_KEYS.get(key.lower())
        if tool is not None:
            claims.append(Claim(source="png-text", kind="generator", value=tool, declares="synthetic",
                                detail={"field": key, "excerpt": _excerpt(text)}))
        elif key.lower() in vocab.PNG_SEARCHED_KEYS:
            found = generator_claims("png-text", key, text)
            if not found and key.lower() == "software":
                found = [Claim(source="png-text", kind="software", value=_excerpt(text), detail={"field": key})]
            claims += found
    return claims


def comment_claims(comments: list[str]) -> list[Claim]:
    claims: list[Claim] = []
    for text in comments:
        claims += generator_claims("comment", "comment", text)
    return claims


def merge(claims: list[Claim]) -> list[Claim]:
    """One claim per (source, kind, value, verified): ComfyUI's `prompt` and `workflow` are one
    ComfyUI hint, its detail listing both fields."""
    out: dict[tuple, Claim] = {}
    for c in claims:
        k = (c.source, c.kind, c.value, c.verified)
        if k not in out:
            out[k] = c
            continue
        kept = out[k]
        if c.declares and not kept.declares:
            kept.declares = c.declares
        fields = kept.detail.setdefault("also", [])
        if "field" in c.detail and len(fields) < 8:
            fields.append(c.detail["field"])
    return list(out.values())
