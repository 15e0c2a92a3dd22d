"""training/compare.py: paired AUC differences between two models' eval reports (numpy only)."""

from __future__ import annotations

import json

import numpy as np

from training import compare


def _report(path, scores_real, scores_fake, name):
    files = [{"path": f"r{i}.jpg", "condition": "original", "label": 0, "group": "heldout-real",
              "status": "scored", "score": float(s)} for i, s in enumerate(scores_real)]
    files += [{"path": f"f{i}.jpg", "condition": "original", "label": 1, "group": "swap",
               "status": "scored", "score": float(s)} for i, s in enumerate(scores_fake)]
    files.append({"path": "noface.jpg", "condition": "original", "label": 1, "group": "swap",
                  "status": "no_face", "score": None})
    path.write_text(json.dumps({"model": {"name": "m", "version": name}, "files": files}))
    return path


def test_a_clearly_better_model_has_an_interval_above_zero(tmp_path, capsys):
    rng = np.random.default_rng(0)
    real = rng.uniform(0.0, 0.6, 80)
    weak = rng.uniform(0.2, 0.8, 80)            # overlaps the reals a lot
    strong = rng.uniform(0.5, 1.0, 80)          # barely overlaps
    old = _report(tmp_path / "old.json", real, weak, "1")
    new = _report(tmp_path / "new.json", real, strong, "2")
    rows = compare.compare(compare.load_scores(old), compare.load_scores(new), resamples=300)
    assert len(rows) == 1
    r = rows[0]
    assert (r["real"], r["fake"]) == (80, 80)   # the no-face file is left out
    assert r["auc_new"] > r["auc_old"] and r["ci_low"] > 0
    assert compare.main([str(old), str(new), "--resamples", "200"]) == 0
    out = capsys.readouterr().out
    assert "| original | swap | 80 / 80 |" in out and "m 1" in out and "m 2" in out


def test_the_same_model_twice_differs_by_nothing(tmp_path):
    rng = np.random.default_rng(1)
    a = _report(tmp_path / "a.json", rng.uniform(0, 1, 30), rng.uniform(0, 1, 30), "1")
    rows = compare.compare(compare.load_scores(a), compare.load_scores(a), resamples=100)
    assert rows[0]["diff"] == 0 and rows[0]["ci_low"] == 0 and rows[0]["ci_high"] == 0
    assert rows[0]["auc_mean"] == rows[0]["auc_old"]
