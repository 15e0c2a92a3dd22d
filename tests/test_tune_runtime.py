"""training/tune_runtime.py: choosing a model's crop margin on validation sets (no torch)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from mediagen import sbi_validation_csv

from detector.pipeline import Detector
from training import tune_runtime

REPO = Path(__file__).resolve().parents[1]


def _rows(separating: float, other: float, n: int = 60) -> list[dict]:
    """Items whose logit at `separating` ranks every fake above every real, and at `other` is noise."""
    rng = np.random.default_rng(0)
    rows = []
    for cond in tune_runtime.CONDITIONS:
        for group in (tune_runtime.REAL_SET, *tune_runtime.FAKE_SETS):
            label = 0 if group == tune_runtime.REAL_SET else 1
            for _ in range(n):
                z = {separating: rng.normal(3.0 if label else -3.0, 0.5), other: rng.normal(0.0, 1.0)}
                rows.append({"group": group, "label": label, "condition": cond, "logits": z})
    return rows


def test_the_margin_that_separates_real_from_fake_wins_and_is_calibrated():
    rows = _rows(1.1, 1.3)
    table = tune_runtime.auc_table(rows, (1.1, 1.3))
    assert table[1.1]["mean"] == 1.0 and abs(table[1.3]["mean"] - 0.5) < 0.15
    assert set(table[1.1]) == {f"{f}/{c}" for f in tune_runtime.FAKE_SETS for c in tune_runtime.CONDITIONS} | {"mean"}
    cal = tune_runtime.calibrate(rows, 1.1)
    assert cal["fpr_at_review"] <= 0.05 and cal["fpr_at_block"] <= 0.01 and cal["review"] <= cal["block"] <= 1.0
    assert cal["tpr_at_review"] == 1.0  # the classes do not overlap
    assert cal["temperature"] > 0


def test_write_sets_the_margin_and_the_model_still_loads(tmp_path):
    """End to end on real faces: a tiny validation CSV (photos and their Self-Blended fakes),
    two margins, --write into a copy of the shipped model."""
    model = tmp_path / "model"
    shutil.copytree(REPO / "models" / "verity-sbi", model)
    before = json.loads((model / "model.json").read_text())
    det = Detector(model=str(model), device="cpu")
    sbi_validation_csv(tmp_path, det.face_detector)
    tune_runtime.main(["--csv", str(tmp_path / "eval.csv"), "--model", str(model), "--margins", "1.1,1.3",
                       "--write", "--version", "9.9.9"])
    after = json.loads((model / "model.json").read_text())
    tuning = after["runtime_tuning"]
    assert after["version"] == "9.9.9" and after["crop"]["margin"] == tuning["chosen"] in (1.1, 1.3)
    assert tuning["previous"]["version"] == before["version"] and tuning["previous"]["margin"] == 1.3
    assert set(tuning["auc_by_margin"]) == {"1.1", "1.3"}
    assert after["thresholds"]["review"] <= after["thresholds"]["block"] <= 1.0
    assert after["sha256"] == before["sha256"]  # the weights are untouched
    # the picture and video calibrations were fitted on the old scores: gone, to be refitted
    assert "picture" in before and "video" in before and "picture" not in after and "video" not in after
    res = Detector(model=str(model), device="cpu").analyze_path(tmp_path / "real0.png")
    assert res.model_version == "9.9.9" and res.score is not None
