"""training/video_eval.py --views: the video frames' views it measures and writes (tta.video)."""

from __future__ import annotations

import json
import shutil

import pytest

from detector.manifest import load_manifest
from training import video_eval


@pytest.mark.parametrize("views,margins,mirror,per_face", [
    ("photo", (1.3, 1.15), True, 4), ("one-crop", (1.3,), True, 2),
    ("no-mirror", (1.3, 1.15), False, 2), ("one", (1.3,), False, 1)])
def test_each_views_choice_is_a_manifest_the_runtime_reads_as_meant(tmp_path, views, margins, mirror, per_face):
    shipped = load_manifest("verity-sbi-research")
    doc = json.loads((shipped.path / "model.json").read_text())
    assert doc["crop"]["margin"] == 1.3
    doc["tta"] = video_eval.with_video_views({"hflip": True, "margins": [1.15], "video": {"hflip": True}}, views)
    (tmp_path / "m").mkdir()
    shutil.copyfile(shipped.model_path, tmp_path / "m" / "model.onnx")
    (tmp_path / "m" / "model.json").write_text(json.dumps(doc))
    m = load_manifest(tmp_path / "m")
    assert m.video_crop_margins == margins and m.video_hflip is mirror
    assert len(m.video_crop_margins) * (2 if m.video_hflip else 1) == per_face
    assert m.crop_margins == (1.3, 1.15) and m.tta.hflip  # a photo's views never change
    assert (m.tta.video is None) == (views == "photo")
    # choosing again replaces the choice
    assert video_eval.with_video_views(doc["tta"], "photo") == {"hflip": True, "margins": [1.15]}
