"""The words provenance metadata uses, named once: IPTC's digital source types and the names of
known image and video generators.

IPTC's "Digital Source Type" NewsCodes (https://cv.iptc.org/newscodes/digitalsourcetype/) are
what both XMP (`Iptc4xmpExt:DigitalSourceType`) and C2PA (`digitalSourceType` on a
`c2pa.created` / `c2pa.edited` action) use to say how a picture came to be. Each term is a URL;
writers disagree on http/https, a trailing slash and sometimes write the bare term, so values
are compared by their last path segment (`source_type_term`).
"""

from __future__ import annotations

import re

IPTC_DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/"
"""The vocabulary's base URL: a term's URL is this plus the term."""

# --- the terms (IPTC Digital Source Type NewsCodes, current and retired) -----------------------
DIGITAL_CAPTURE = IPTC_DIGITAL_SOURCE_TYPE + "digitalCapture"
"""Captured by a digital camera or scanner from a real-life scene."""
COMPUTATIONAL_CAPTURE = IPTC_DIGITAL_SOURCE_TYPE + "computationalCapture"
"""A capture processed by the device's algorithms (phone HDR, night modes...)."""
COMPOSITE_CAPTURE = IPTC_DIGITAL_SOURCE_TYPE + "compositeCapture"
"""A composite of several captures (panorama, focus stack)."""
NEGATIVE_FILM = IPTC_DIGITAL_SOURCE_TYPE + "negativeFilm"
POSITIVE_FILM = IPTC_DIGITAL_SOURCE_TYPE + "positiveFilm"
PRINT = IPTC_DIGITAL_SOURCE_TYPE + "print"
SCREEN_CAPTURE = IPTC_DIGITAL_SOURCE_TYPE + "screenCapture"
VIRTUAL_RECORDING = IPTC_DIGITAL_SOURCE_TYPE + "virtualRecording"
HUMAN_EDITS = IPTC_DIGITAL_SOURCE_TYPE + "humanEdits"
MINOR_HUMAN_EDITS = IPTC_DIGITAL_SOURCE_TYPE + "minorHumanEdits"
ALGORITHMICALLY_ENHANCED = IPTC_DIGITAL_SOURCE_TYPE + "algorithmicallyEnhanced"
DIGITAL_CREATION = IPTC_DIGITAL_SOURCE_TYPE + "digitalCreation"
DIGITAL_ART = IPTC_DIGITAL_SOURCE_TYPE + "digitalArt"
SOFTWARE_IMAGE = IPTC_DIGITAL_SOURCE_TYPE + "softwareImage"
DATA_DRIVEN_MEDIA = IPTC_DIGITAL_SOURCE_TYPE + "dataDrivenMedia"
COMPOSITE = IPTC_DIGITAL_SOURCE_TYPE + "composite"
TRAINED_ALGORITHMIC_MEDIA = IPTC_DIGITAL_SOURCE_TYPE + "trainedAlgorithmicMedia"
"""Made by a model trained on sampled content (text-to-image, image-to-video...): generative AI."""
ALGORITHMIC_MEDIA = IPTC_DIGITAL_SOURCE_TYPE + "algorithmicMedia"
"""Made purely by an algorithm not based on sampled training data."""
COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA = IPTC_DIGITAL_SOURCE_TYPE + "compositeWithTrainedAlgorithmicMedia"
"""A composite that includes generative-AI elements (inpainting, generative fill)."""
COMPOSITE_SYNTHETIC = IPTC_DIGITAL_SOURCE_TYPE + "compositeSynthetic"
"""A composite that includes synthetic elements."""
TRAINED_ALGORITHMIC_DATA = "http://c2pa.org/digitalsourcetype/trainedAlgorithmicData"
"""C2PA's own term for data used to train a model (not a picture made by one)."""

SYNTHETIC_SOURCE_TYPES = frozenset({
    TRAINED_ALGORITHMIC_MEDIA, COMPOSITE_SYNTHETIC, COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA, ALGORITHMIC_MEDIA,
})
"""A file declaring one of these says it is (partly) machine-made: `declared_synthetic`."""

CAPTURE_SOURCE_TYPES = frozenset({DIGITAL_CAPTURE, COMPUTATIONAL_CAPTURE, COMPOSITE_CAPTURE})
"""A file declaring one of these says a camera took it: `declared_capture`."""

KNOWN_SOURCE_TYPES = frozenset({
    DIGITAL_CAPTURE, COMPUTATIONAL_CAPTURE, COMPOSITE_CAPTURE, NEGATIVE_FILM, POSITIVE_FILM, PRINT,
    SCREEN_CAPTURE, VIRTUAL_RECORDING, HUMAN_EDITS, MINOR_HUMAN_EDITS, ALGORITHMICALLY_ENHANCED,
    DIGITAL_CREATION, DIGITAL_ART, SOFTWARE_IMAGE, DATA_DRIVEN_MEDIA, COMPOSITE, TRAINED_ALGORITHMIC_MEDIA,
    ALGORITHMIC_MEDIA, COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA, COMPOSITE_SYNTHETIC, TRAINED_ALGORITHMIC_DATA,
})

_BY_TERM = {url.rstrip("/").rsplit("/", 1)[-1].lower(): url for url in KNOWN_SOURCE_TYPES}


def source_type_term(value: str) -> str:
    """The term of a digital source type value: its last path segment ("trainedAlgorithmicMedia")."""
    return value.strip().rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]


def canonical_source_type(value: str) -> str:
    """The vocabulary's URL for a value written with https, a trailing slash, another case or as
    a bare term; an unknown value comes back stripped but otherwise as written."""
    return _BY_TERM.get(source_type_term(value).lower(), value.strip())


def declares(source_type: str) -> str | None:
    """"synthetic", "capture" or None for a digital source type value."""
    url = canonical_source_type(source_type)
    if url in SYNTHETIC_SOURCE_TYPES:
        return "synthetic"
    if url in CAPTURE_SOURCE_TYPES:
        return "capture"
    return None


# --- generators -----------------------------------------------------------------------------
KNOWN_GENERATORS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern, re.IGNORECASE)) for name, pattern in (
        ("Midjourney", r"\bmidjourney\b"),
        ("DALL-E", r"\bdall[\s\-·.]?e\b"),
        ("OpenAI", r"\bopenai\b|\bchatgpt\b|\bgpt-image\b|\bgpt-4o\b"),
        ("Sora", r"\bopenai\s?sora\b|\bsora\s?(?:app|2)\b"),
        ("Stable Diffusion", r"\bstable[\s_\-]?diffusion\b|\bsdxl\b|\bautomatic1111\b|\bstability\s?ai\b|\bdreamstudio\b"),
        ("ComfyUI", r"\bcomfyui\b"),
        ("InvokeAI", r"\binvoke\s?ai\b"),
        ("Fooocus", r"\bfooocus\b"),
        ("NovelAI", r"\bnovel\s?ai\b"),
        ("Adobe Firefly", r"\badobe\s?firefly\b"),
        ("Imagen", r"\bgoogle\s?imagen\b|\bimagen\s?[234]\b"),
        ("Google Gemini", r"\bgoogle\s?gemini\b|\bgemini\s?(?:\d|flash|pro|nano)"),
        ("Google Veo", r"\bgoogle\s?veo\b|\bveo\s?[23]\b"),
        ("FLUX", r"\bflux\.1\b|\bflux[\s\-](?:dev|pro|schnell|kontext)\b|\bblack\s?forest\s?labs\b"),
        ("Ideogram", r"\bideogram\b"),
        ("Leonardo.Ai", r"\bleonardo\.?\s?ai\b"),
        ("Runway", r"\brunway\s?ml\b|\brunway\s?gen[\s\-]?\d\b"),
        ("Kling", r"\bkling\s?(?:ai|\d)|\bkuaishou\b"),
        ("Pika", r"\bpika\s?(?:labs|\.art)\b"),
        ("Microsoft Designer / Bing Image Creator", r"\bbing\s?image\s?creator\b|\bmicrosoft\s?designer\b"),
        ("Craiyon", r"\bcraiyon\b"),
        ("NightCafe", r"\bnightcafe\b"),
    )
)
"""(name, pattern) of generators whose name in a Software, Comment, CreatorTool or C2PA claim
generator field says the file was machine-made. Word-bounded and qualified where the bare name
is an everyday word ("imagen" is Spanish for image, "Firefly" an insect): "Google Imagen",
"Adobe Firefly". A hint, never proof: anyone can write these fields."""


def known_generator(text: str) -> str | None:
    """The first known generator named in `text`, or None."""
    for name, pattern in KNOWN_GENERATORS:
        if pattern.search(text):
            return name
    return None


PNG_GENERATOR_KEYS = {
    "parameters": "Stable Diffusion WebUI",
    "prompt": "ComfyUI",
    "workflow": "ComfyUI",
    "sd-metadata": "InvokeAI",
    "invokeai_metadata": "InvokeAI",
    "invokeai_graph": "InvokeAI",
    "dream": "InvokeAI",
    "fooocus_scheme": "Fooocus",
}
"""PNG text keys (lower case) that generation tools write: the key alone names the tool
(AUTOMATIC1111/Forge write `parameters`, ComfyUI `prompt` and `workflow`)."""

PNG_SEARCHED_KEYS = frozenset({"software", "comment", "source", "description", "title", "author", "generator"})
"""PNG text keys (lower case) whose values are searched for a known generator's name."""

SD_PARAMETERS = re.compile(r"\bSteps:\s*\d+.*\bSampler:", re.IGNORECASE | re.DOTALL)
"""How AUTOMATIC1111 writes its generation parameters (also into a JPEG's EXIF UserComment)."""
