"""Compare two models on the same evaluation files: paired ROC-AUC differences with bootstrap
confidence intervals.

    verity eval --csv SETS/eval.csv --conditions original,jpeg50 --json --per-file --model OLD > old.json
    verity eval --csv SETS/eval.csv --conditions original,jpeg50 --json --per-file --model NEW > new.json
    python -m training.compare old.json new.json

On a hundred held-out people an AUC moves by a few hundredths from luck alone, so "0.86 -> 0.88"
means nothing without an interval. Each fake group is measured against the real group (default
`heldout-real`), per condition, on the files both models scored. The interval resamples the real
and the fake files with replacement, the same draw for both models (a paired bootstrap), and
reports the 2.5th and 97.5th percentiles of new minus old. The `mean` column is the AUC of the
two models' averaged logits (an ensemble of the two). numpy only: runs in the runtime venv.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from detector.evaluation import roc_auc


def load_scores(path: str | Path) -> dict[tuple[str, str], tuple[int, str, float]]:
    """(path, condition) -> (label, group, score) for every scored file of a `verity eval --json
    --per-file` report."""
    report = json.loads(Path(path).read_text())
    return {(f["path"], f["condition"]): (int(f["label"]), f["group"], float(f["score"]))
            for f in report.get("files", []) if f.get("status") == "scored"}


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _auc(real: np.ndarray, fake: np.ndarray) -> float:
    return roc_auc(np.r_[np.zeros(len(real)), np.ones(len(fake))], np.r_[real, fake])


def compare(old: dict, new: dict, real_group: str = "heldout-real", resamples: int = 2000,
            seed: int = 0, groups: list[str] | None = None) -> list[dict]:
    """One row per (condition, fake group): sizes, both AUCs, the ensemble's, the difference and
    its paired-bootstrap 95% interval."""
    both = sorted(set(old) & set(new))
    rng = np.random.default_rng(seed)
    rows = []
    for cond in sorted({c for _p, c in both}):
        keys = [k for k in both if k[1] == cond]
        reals = [k for k in keys if old[k][1] == real_group and old[k][0] == 0]
        if not reals:
            continue
        for group in sorted({old[k][1] for k in keys if old[k][0] == 1}):
            if groups and group not in groups:
                continue
            fakes = [k for k in keys if old[k][1] == group and old[k][0] == 1]
            a = [np.array([m[k][2] for k in ks]) for m in (old, new) for ks in (reals, fakes)]
            auc_old, auc_new = _auc(a[0], a[1]), _auc(a[2], a[3])
            mean = _auc((_logit(a[0]) + _logit(a[2])) / 2, (_logit(a[1]) + _logit(a[3])) / 2)
            diffs = np.empty(resamples)
            for i in range(resamples):
                ri = rng.integers(0, len(reals), len(reals))
                fi = rng.integers(0, len(fakes), len(fakes))
                diffs[i] = _auc(a[2][ri], a[3][fi]) - _auc(a[0][ri], a[1][fi])
            lo, hi = np.percentile(diffs, [2.5, 97.5])
            rows.append({"condition": cond, "group": group, "real": len(reals), "fake": len(fakes),
                         "auc_old": auc_old, "auc_new": auc_new, "auc_mean": mean,
                         "diff": auc_new - auc_old, "ci_low": float(lo), "ci_high": float(hi)})
    return rows


def markdown(rows: list[dict], old_name: str, new_name: str) -> str:
    head = (f"| condition | fake set | real / fake | {old_name} | {new_name} | difference (95% CI) | mean of both |\n"
            "|---|---|---:|---:|---:|---|---:|\n")
    return head + "".join(
        f"| {r['condition']} | {r['group']} | {r['real']} / {r['fake']} | {r['auc_old']:.3f} | {r['auc_new']:.3f} | "
        f"{r['diff']:+.3f} ({r['ci_low']:+.3f} to {r['ci_high']:+.3f}) | {r['auc_mean']:.3f} |\n" for r in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("old", type=Path, help="verity eval --json --per-file report of the old model")
    ap.add_argument("new", type=Path, help="the same for the new model")
    ap.add_argument("--real-group", default="heldout-real")
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--groups", default="", help="comma-separated fake groups to compare (default: all)")
    ap.add_argument("--json", action="store_true", help="rows as JSON instead of a markdown table")
    args = ap.parse_args(argv)
    old, new = load_scores(args.old), load_scores(args.new)
    rows = compare(old, new, args.real_group, args.resamples,
                   groups=[g.strip() for g in args.groups.split(",") if g.strip()] or None)
    if not rows:
        raise SystemExit(f"no files scored by both reports with a '{args.real_group}' real group")
    names = [json.loads(p.read_text()).get("model", {}) for p in (args.old, args.new)]
    label = [f"{m.get('name', p.stem)} {m.get('version', '')}".strip() for m, p in zip(names, (args.old, args.new))]
    print(json.dumps(rows, indent=1) if args.json else markdown(rows, *label), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
