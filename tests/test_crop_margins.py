"""training.crop_margins: further crop margins read as the runtime reads tta.margins, and the
model.json it writes (no torch needed)."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from detector.aggregate import _logit
from detector.manifest import REPOSITORY_MODELS_DIR, load_manifest
from training import crop_margins as cm


def test_each_face_takes_the_mean_logit_of_its_margins_and_mismatched_pictures_are_left_out():
    a = {"p.jpg": {"original": [[80, 0.9], [40, 0.2]]}, "q.jpg": {"original": [[60, 0.5]]}}
    b = {"p.jpg": {"original": [[80, 0.5], [40, 0.6]]}, "q.jpg": {"original": []}}
    got, skipped = cm.averaged([a, b])
    assert skipped == 1 and "q.jpg" not in got  # the margins did not see the same faces there
    (w1, s1), (w2, s2) = got["p.jpg"]["original"]
    assert (w1, w2) == (80, 40)  # each face keeps its width
    assert _logit(s1) == pytest.approx((_logit(0.9) + _logit(0.5)) / 2, abs=1e-9)
    assert _logit(s2) == pytest.approx((_logit(0.2) + _logit(0.6)) / 2, abs=1e-9)


def test_write_sets_the_margins_and_drops_the_calibrations_fitted_on_one_crop(tmp_path):
    shipped = REPOSITORY_MODELS_DIR / "verity-sbi-research"
    model = tmp_path / "m"
    shutil.copytree(shipped, model)
    before = json.loads((model / "model.json").read_text())
    assert "picture" in before and "video" in before
    cm.write_margins(model, [1.3, 1.15])  # the model's own margin is not repeated
    after = json.loads((model / "model.json").read_text())
    assert after["tta"] == {**before["tta"], "margins": [1.15]}
    assert "picture" not in after and "video" not in after
    m = load_manifest(str(model))  # still a valid model, now cropping each face twice
    assert m.crop_margins == (before["crop"]["margin"], 1.15)
    with pytest.raises(ValueError, match="1.0, 3.0"):
        cm.write_margins(model, [4.0])


def test_a_margin_copy_crops_at_that_margin_alone_and_links_the_network(tmp_path):
    shipped = REPOSITORY_MODELS_DIR / "verity-sbi-research"
    copy = cm.margin_copy(tmp_path, shipped, 1.15)
    m = load_manifest(str(copy))
    assert m.crop_margins == (1.15,) and m.version.endswith("+m1.15")
    assert (copy / m.file).is_symlink() and math.isclose(m.crop.margin, 1.15)
