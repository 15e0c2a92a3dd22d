"""MODEL_CARD.md of an exported model: where its weights came from, and the card itself.

The card's text is the Jinja2 template `templates/model_card.md.j2` beside this file; this module
works out what goes into it (the stages that made the starting weights, which history columns were
recorded, the evaluation part of an earlier card) and renders it. The text between
<!-- EVAL:BEGIN --> and <!-- EVAL:END --> of an existing card is kept: it belongs to the evaluation
script (training.eval_sets). No torch, except to read an `--init` checkpoint in `init_stage`.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import jinja2

TEMPLATES = Path(__file__).resolve().parent / "templates"
EVAL_BEGIN, EVAL_END = "<!-- EVAL:BEGIN -->", "<!-- EVAL:END -->"
NOT_EVALUATED = f"{EVAL_BEGIN}\n_Not evaluated yet: the evaluation script fills this in._\n{EVAL_END}"
HISTORY_COLUMNS = ("val_auc_clean", "val_auc_jpeg50_half", "val_auc_bi", "monitor_auc_swap")
"""The per-epoch numbers of history.json that the card's training table shows, in this order (a
column only when some epoch recorded it; the headings are in the template)."""


def init_stage(cfg: dict) -> dict | None:
    """Where the weights of a `--init` run came from: the earlier run's command and best epoch;
    for `--init-onnx`, the earlier model's name, version, sha256 and its own training block
    (read from the model.json beside it, before the export overwrites anything)."""
    if cfg.get("init_onnx"):
        path = Path(cfg["init_onnx"])
        man = path.with_name("model.json")
        prev = json.loads(man.read_text()) if man.exists() else {}
        return {"onnx": str(path), "name": prev.get("name"), "version": prev.get("version"),
                "sha256": prev.get("sha256"), "training": prev.get("training")}
    if not cfg.get("init"):
        return None
    path = Path(cfg["init"])
    if not path.exists():
        return {"checkpoint": str(path), "command": None}
    import torch

    ck = torch.load(path, map_location="cpu", weights_only=False)
    prev = ck.get("config", {})
    best = ck.get("metrics") or {}
    return {"checkpoint": str(path), "command": prev.get("command"), "size": prev.get("size"),
            "epoch": ck.get("epoch"), "step": best.get("step"),
            "val_auc_clean": best.get("val_auc_clean"), "val_auc_jpeg50_half": best.get("val_auc_jpeg50_half"),
            "parent": init_stage(prev)}


def stages(init: dict | None) -> list[dict]:
    """The training stages that made a run's starting weights, oldest first (the `init` block of
    model.json, unrolled). Each is an "exported" model (size, name, version, onnx, sha256) or a
    "checkpoint" (size, where it started from: "imagenet", "exported" or "stage", its best epoch,
    step and validation AUCs, its path), with the command that trained it."""
    if not init:
        return []
    if init.get("onnx"):  # an exported model: its own stages, the last of which made it
        prev = init.get("training") or {}
        return stages(prev.get("init")) + [{
            "kind": "exported", "size": prev.get("size"), "name": init.get("name"),
            "version": init.get("version"), "onnx": init["onnx"], "sha256": str(init.get("sha256")),
            "command": prev.get("command")}]
    parent = init.get("parent")
    return stages(parent) + [{
        "kind": "checkpoint", "size": init.get("size"),
        "origin": "imagenet" if parent is None else "exported" if parent.get("onnx") else "stage",
        "epoch": init.get("epoch"), "step": init.get("step"), "val_auc_clean": init.get("val_auc_clean"),
        "val_auc_jpeg50_half": init.get("val_auc_jpeg50_half"), "checkpoint": init["checkpoint"],
        "command": init.get("command")}]


def kept_evaluation(card: Path) -> str:
    """The evaluation part (markers included) of an existing card, or the placeholder."""
    if card.exists():
        m = re.search(re.escape(EVAL_BEGIN) + r".*?" + re.escape(EVAL_END), card.read_text(), re.DOTALL)
        if m:
            return m.group(0)
    return NOT_EVALUATED


def _num(x) -> str:
    """A number of the lineage: 4 decimals when it is a float, as it is otherwise (None, ints)."""
    return f"{x:.4f}" if isinstance(x, float) else str(x)


@functools.cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                             autoescape=False)
    env.filters["fmt"] = format  # {{ x | fmt(".4f") }} is f"{x:.4f}"
    env.filters["num"] = _num
    return env.get_template("model_card.md.j2")


def splits_seed(cfg: dict):
    """The seed of the identity split the run used: its splits file's (written by the first run
    with that file, reused by the later ones whatever their own --seed), else the run's."""
    path = Path(cfg.get("splits") or "")
    if path.is_file():
        try:
            return json.loads(path.read_text()).get("seed", cfg.get("seed"))
        except (OSError, ValueError):
            pass
    return cfg.get("seed")


def render(manifest: dict, cfg: dict, history: list[dict], notes: str, evaluation: str = NOT_EVALUATED) -> str:
    """The card's text: `manifest` is the model.json written by training.export, `cfg` the run's
    config, `history` its history.json up to the exported epoch, `notes` Markdown put in as it is,
    `evaluation` the evaluation part with its markers."""
    tr = manifest["training"]
    init = tr.get("init")
    return _template().render(
        m=manifest, tr=tr, met=manifest["metrics"], thr=manifest["thresholds"], cfg=cfg,
        tta=tr.get("tta", "off"), p_bi=tr.get("p_bi", 0), p_video=tr.get("p_video", 0),
        p_occlude=tr.get("p_occlude"), p_lowres=tr.get("p_lowres"), p_small=tr.get("p_small"), p_seamless=tr.get("p_seamless"),
        p_frame=tr.get("p_frame"), p_clean=tr.get("p_clean"),
        xray=tr.get("xray"), faces_per_image=tr.get("faces_per_image", 1),
        stages=stages(init),
        # "epoch 0 = its starting weights" is said of a run started from an exported model or from a
        # checkpoint that had a start of its own (a first stage from ImageNet weights: not said)
        epoch0_is_start=bool(init and (init.get("parent") or init.get("onnx"))),
        columns=[c for c in HISTORY_COLUMNS if any(c in h for h in history)], history=history,
        splits_seed=splits_seed(cfg), notes=notes, evaluation=evaluation)


def write_card(out: Path, manifest: dict, cfg: dict, history: list[dict], notes: str) -> None:
    """Write out/MODEL_CARD.md (see `render`), keeping the evaluation part of the card there."""
    card = out / "MODEL_CARD.md"
    card.write_text(render(manifest, cfg, history, notes, kept_evaluation(card)))
