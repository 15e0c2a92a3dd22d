"""training/picture_calibration.py: fitting a model's `picture` block and judging it on people
the fit did not see (numpy and the runtime's own aggregation; no torch)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from detector.manifest import PictureSpec
from training import picture_calibration as pc


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def _world(seed: int = 0, people: int = 400, groups: int = 300) -> tuple[dict, dict]:
    """Pictures whose faces score like a model's: real logits N(-1, 1), a fake face +2.5 higher.
    Singles hold one face of 80-300 px; groups hold four of 45-110 px, one of them fake in a
    fake group. items.json rows and the faces a collection would have recorded."""
    rng = np.random.default_rng(seed)
    items, faces = [], {}

    def add(path, label, layout, unit, logits, widths):
        items.append({"path": path, "label": label, "source": "faces-x", "family": "fake" if label else "real",
                      "layout": layout, "unit": unit})
        faces[path] = {"original": [[float(w), _sigmoid(z)] for w, z in zip(widths, logits)]}

    for i in range(people):
        w = rng.uniform(80, 300, 1)
        add(f"s/real/{i}.jpg", 0, "single", f"p{i}", rng.normal(-1, 1, 1), w)
        add(f"s/fake/{i}.jpg", 1, "single", f"p{i}", rng.normal(1.5, 1, 1), w)
    for g in range(groups):
        w = rng.uniform(45, 110, 4)
        real = rng.normal(-1, 1, 4)
        fake = real.copy()
        fake[0] = rng.normal(1.5, 1)
        add(f"g/real/{g}.jpg", 0, "group", f"g{g}", real, w)
        add(f"g/fake/{g}.jpg", 1, "group", f"g{g}", fake, w)
    return {"split": "val", "items": items}, {"faces": faces, "rescaled": []}


def test_the_reference_is_the_real_faces_of_single_photos():
    meta, collected = _world()
    block = pc.fit(*pc.real_faces(meta, collected))
    assert block["aggregate"] == "count_adjusted"
    assert block["reference_mean"] == pytest.approx(-1, abs=0.15)
    assert block["reference_std"] == pytest.approx(1, abs=0.1)
    sized = pc.fit(*pc.real_faces(meta, collected), "size_adjusted", knots=(40, 80, 160, 2000))
    # a knot with too few real faces near it is left out: no face here is wider than 300 px
    assert sized["widths"] == [40, 80, 160]
    assert all(m == pytest.approx(-1, abs=0.3) for m in sized["mean"])
    PictureSpec.model_validate(sized)


def test_reading_the_count_flags_real_groups_as_often_as_real_singles_on_people_it_did_not_fit():
    meta, collected = _world()
    units = sorted({r["unit"] for r in meta["items"]})
    folds = {k: PictureSpec.model_validate(pc.fit(*pc.real_faces(meta, collected, {u for u in units if pc._fold(u) != k})))
             for k in (0, 1)}
    rows = pc.compare(meta, collected, ["original"], _sigmoid(0.64), {
        "max": lambda unit: PictureSpec(), "count_adjusted": lambda unit: folds[pc._fold(unit)]})
    by = {r["layout"]: r for r in rows}
    # the max of four real faces crosses the threshold (5% of single real faces) far more often
    assert by["group"]["max"]["real_flagged"] > 2 * by["single"]["max"]["real_flagged"]
    # read for the count, a real group is flagged about as often as a real single photo
    assert by["group"]["count_adjusted"]["real_flagged"] < 1.6 * by["single"]["count_adjusted"]["real_flagged"] + 0.02
    # a single face keeps its score; the price is paid by fakes in groups, which are flagged
    # less often (the model cards give the figures on real pictures)
    assert by["single"]["count_adjusted"] == pytest.approx(by["single"]["max"])
    assert by["group"]["count_adjusted"]["fake_flagged"] < by["group"]["max"]["fake_flagged"]
    assert "| original | all |" in pc.table(rows, ["max", "count_adjusted"])


def test_a_calibration_is_never_fitted_on_the_evaluation_s_test_people(tmp_path):
    (tmp_path / "items.json").write_text(json.dumps({"split": "test", "items": []}))
    with pytest.raises(SystemExit, match="validation people only"):
        pc.collect(tmp_path, "models/verity-sbi", ["original"])
