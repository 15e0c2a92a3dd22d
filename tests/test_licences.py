"""Data licences are part of the product: model.json says whose faces a model learnt from and
whether a business may use it; one research-only folder makes the whole model research-only."""

from __future__ import annotations

from click.testing import CliRunner

from detector.manifest import load_manifest
from training.licences import BUSINESS, RESEARCH, data_licence, merge


def test_one_research_only_or_unknown_folder_makes_the_model_research_only():
    business = data_licence(["faces-london", "faces-fairface"])
    assert business["use"] == BUSINESS and [s["folder"] for s in business["sources"]] == ["faces-fairface", "faces-london"]
    assert data_licence(["faces-london", "faces-lfw"])["use"] == RESEARCH
    assert data_licence(["faces-utk"])["sources"][0]["terms"].startswith("UTKFace: non-commercial")
    unknown = data_licence(["faces-london", "some-scrape"])
    assert unknown["use"] == RESEARCH and "unknown" in unknown["sources"][1]["terms"]
    assert data_licence([])["use"] == RESEARCH  # nothing known: never assume business use
    assert merge([business, data_licence(["faces-lfw"])])["use"] == RESEARCH
    assert merge([business, business])["use"] == BUSINESS
    assert merge([business, None])["use"] == RESEARCH  # a member without a licence is unknown


def test_the_shipped_default_model_is_for_business_use_and_the_doctor_says_so():
    m = load_manifest()
    assert m.data_licence is not None and m.data_licence.use == BUSINESS
    assert {s.folder for s in m.data_licence.sources} >= {"faces-london", "faces-canada", "faces-fairface"}
    from cli import main

    out = CliRunner().invoke(main, ["doctor"]).output
    assert f"data licence: {m.licence_text}" in out
