"""Join exported models into one ONNX classifier that averages them, judged on validation people.

Two networks trained on the same few hundred people still err on different faces; the mean of
their calibrated logits ranks better than either when their errors differ enough. This tool
builds that mean as ONE ONNX graph (each model's nodes under its own prefix, one shared input,
logit = sum_i z_i / (n T_i)), so the runtime, its manifest, its checksum and its batching stay
as they are: an ensemble is just another model folder. The members must read the same crop
(layout, colour, normalisation, crop margin and alignment); their input sizes may differ: the
ensemble reads the largest, and a member trained smaller gets it resized (bilinear) inside the
graph.

It scores the validation people's sets (`python -m training.eval_sets --split val`) with the
runtime's own code (face detector, crops, mirror TTA; no torch) for every member and for the
ensemble, prints ROC-AUC per fake set and condition, and fits the ensemble's temperature and
review/block thresholds there (5% / 1% of the validation real photos, as training/export.py does).

    python -m training.ensemble models/verity-sbi /tmp/verity-mnv2 --out /tmp/verity-ens \\
        --csv /tmp/verity-eval-val/eval.csv --version 2.1.0 [--name verity-sbi]

A model folder that is itself an ensemble counts as its members: they are taken back out of its
graph (`unpack`) and averaged with the others at equal weight, so a new network can join the
shipped ensemble without its members being retrained or kept anywhere else:

    python -m training.ensemble models/verity-sbi /tmp/verity-mnv2b --out /tmp/verity-ens3 ...

`--float16` stores the joined graph's weights as float16, computed in float32 (training.half):
half the file, the logits within about 1e-3; the calibration is then fitted on that graph.

Then compare it with the shipped model on the held-out sets (`training.compare`), never choose on
them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from detector.manifest import Manifest, load_manifest
from training import half

SAME = ("layout", "color", "scale", "mean", "std")
PRECISION_F16 = ("float16 weights, float32 compute: the joined graph's weights stored as float16 and cast to "
                 "float32 as onnxruntime loads it (training.half, training.ensemble --float16)")


def check_compatible(members: list[Manifest]) -> None:
    """The members must be fed the same crop with one normalisation (at their own input sizes)."""
    first = members[0]
    for m in members[1:]:
        for key in SAME:
            if getattr(m.input, key) != getattr(first.input, key):
                raise SystemExit(f"{m.name} {m.version}: input.{key} {getattr(m.input, key)} differs from "
                                 f"{first.name} {first.version}'s {getattr(first.input, key)}: not one crop")
        if (m.crop.margin, m.crop.align) != (first.crop.margin, first.crop.align):
            raise SystemExit(f"{m.name} {m.version}: crop {m.crop} differs from {first.name}'s {first.crop}")
        if m.output.kind != "logit" or first.output.kind != "logit":
            raise SystemExit("only models whose output is one logit can be averaged")


def ensemble_size(members: list[Manifest]) -> int:
    return max(m.input.size for m in members)


def _resize_scale(big: int, small: int) -> float:
    """The float32 scale for which ONNX Resize (output = floor(input x scale)) gives `small` from `big`."""
    import numpy as np

    k = np.float32(small / big)
    while int(np.floor(np.float32(big) * k)) < small:
        k = np.nextafter(k, np.float32(1))
    return float(k)


def merge(members: list[Manifest]):
    """One ONNX model: the input goes to every member, logit = sum_i z_i / (n T_i). A member whose
    input is smaller than the ensemble's is fed the crop resized to its size (Resize, linear)."""
    import onnx
    from onnx import TensorProto, compose, helper

    protos = [half.load(m.model_path) for m in members]  # joined as float32 (--float16 halves the whole)
    opsets = [next(o.version for o in p.opset_import if o.domain in ("", "ai.onnx")) for p in protos]
    opset = max(opsets)
    size, source = ensemble_size(members), members[0].input.name  # the one graph input
    nodes, inits, infos, terms = [], [], [], []
    for i, (m, model, have) in enumerate(zip(members, protos, opsets)):
        if have != opset:
            model = onnx.version_converter.convert_version(model, opset)
        model = compose.add_prefix(model, f"m{i}_")
        g = model.graph
        inp = next(x.name for x in g.input if x.name not in {t.name for t in g.initializer})
        outs = [o.name for o in g.output]
        out = f"m{i}_{m.output.name}" if f"m{i}_{m.output.name}" in outs else outs[0]
        if m.input.size == size:
            nodes.append(helper.make_node("Identity", [source], [inp], name=f"m{i}_feed"))
        else:
            k = _resize_scale(size, m.input.size)
            inits.append(helper.make_tensor(f"m{i}_feed_scales", TensorProto.FLOAT, [4], [1.0, 1.0, k, k]))
            nodes.append(helper.make_node("Resize", [source, "", f"m{i}_feed_scales"], [inp],
                                          name=f"m{i}_feed", mode="linear",
                                          coordinate_transformation_mode="half_pixel"))
        nodes.extend(g.node)
        inits.extend(g.initializer)
        infos.extend(g.value_info)
        w = 1.0 / (len(members) * m.calibration.temperature)
        inits.append(helper.make_tensor(f"m{i}_weight", TensorProto.FLOAT, [], [w]))
        nodes.append(helper.make_node("Mul", [out, f"m{i}_weight"], [f"m{i}_weighted"], name=f"m{i}_scale"))
        terms.append(f"m{i}_weighted")
    nodes.append(helper.make_node("Sum", terms, ["logit"], name="ensemble_mean"))
    graph = helper.make_graph(
        nodes, "verity_ensemble",
        [helper.make_tensor_value_info(source, TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["N", 1])],
        initializer=inits, value_info=infos)
    merged = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                               producer_name="verity training.ensemble")
    merged.ir_version = max(p.ir_version for p in protos)
    onnx.checker.check_model(merged)
    return merged


def is_ensemble(m: Manifest) -> bool:
    return isinstance(m.training.get("members"), list) and len(m.training["members"]) > 1


def unpack(folder: str | Path, out: Path) -> list[Path]:
    """Take the members of an ensemble folder back out of its graph, one model folder each under
    `out`, with the member's own temperature (as recorded at joining); a plain model is returned as
    it is. The graph of member i is every node that `merge` put under the prefix `m{i}_` except its
    feed and scale nodes, renamed back: it computes the member's raw logit exactly."""
    import onnx
    from onnx import TensorProto, helper

    ens = load_manifest(folder)
    if not is_ensemble(ens):
        return [ens.path]
    model = half.load(ens.model_path)  # an ensemble joined with --float16: its members come out float32
    g = model.graph
    size = ens.input.size
    doc = json.loads((ens.path / "model.json").read_text())
    paths = []
    for i, info in enumerate(ens.training["members"]):
        pre = f"m{i}_"
        feed = next(n for n in g.node if n.name == f"{pre}feed")
        scale = next(n for n in g.node if n.name == f"{pre}scale")
        glue = (f"{pre}feed", f"{pre}feed_scales", f"{pre}scale", f"{pre}weight")  # what merge added around it
        msize = info.get("input_size", size)
        nodes = [_unprefixed(n, pre) for n in g.node
                 if n.name not in glue and any(o.startswith(pre) for o in n.output)]
        inits = [_unprefixed(t, pre) for t in g.initializer if t.name.startswith(pre) and t.name not in glue]
        infos = [_unprefixed(v, pre) for v in g.value_info if v.name.startswith(pre)]
        inp, out_name = feed.output[0].removeprefix(pre), scale.input[0].removeprefix(pre)
        graph = helper.make_graph(
            nodes, info["name"], [helper.make_tensor_value_info(inp, TensorProto.FLOAT, ["N", 3, msize, msize])],
            [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["N", 1])], initializer=inits, value_info=infos)
        member = helper.make_model(graph, opset_imports=list(model.opset_import),
                                   producer_name="verity training.ensemble unpack")
        member.ir_version = model.ir_version
        onnx.checker.check_model(member)
        dest = Path(out) / f"{info['name']}-{info['version']}"
        dest.mkdir(parents=True, exist_ok=True)
        onnx.save(member, str(dest / "model.onnx"))
        # the ensemble's video and picture calibrations were fitted on its scores, not a member's
        mdoc = {k: v for k, v in doc.items() if k not in ("metrics", "runtime_tuning", "video", "picture")}
        mdoc.update({
            "name": info["name"], "version": info["version"], "file": "model.onnx",
            "sha256": hashlib.sha256((dest / "model.onnx").read_bytes()).hexdigest(),
            "input": {**doc["input"], "name": inp, "size": msize},
            "output": {"name": out_name, "kind": "logit", "meaning": "manipulated face (raw logit)"},
            "calibration": {"method": "temperature", "temperature": info["temperature"]},
            # recorded per member by ensembles joined after 3.0.0; for older ones the ensemble's own
            # (ranking the validation photos is all they serve here)
            "tta": info.get("tta", doc["tta"]),
            "thresholds": info.get("thresholds", doc["thresholds"]),
            "training": {**{k: v for k, v in info.items() if k not in ("name", "version", "sha256", "temperature",
                                                                       "tta", "thresholds", "input_size")},
                         "unpacked_from": f"{ens.name} {ens.version}", "unpacked_from_sha256": ens.sha256,
                         "sha256_at_joining": info["sha256"]},
        })
        (dest / "model.json").write_text(json.dumps(mdoc, indent=1) + "\n")
        paths.append(dest)
    return paths


def _unprefixed(proto, pre: str):
    """A copy of a node, initialiser or value info of a merged graph with its member prefix taken off
    its name (and, for a node, off its inputs and outputs)."""
    import onnx

    c = type(proto)()
    c.CopyFrom(proto)
    c.name = c.name.removeprefix(pre)
    if isinstance(c, onnx.NodeProto):
        c.input[:] = [x.removeprefix(pre) for x in c.input]
        c.output[:] = [x.removeprefix(pre) for x in c.output]
    return c


def ensemble_hflip(members: list[Manifest]) -> bool:
    """The runtime mirrors the whole graph or nothing. A member exported without the flip had it
    measured as no gain (training/export.py keeps it only when it helps), so the mean over the
    mirror costs that member nothing, while turning it off would cost the members that gained it."""
    hflip = any(m.tta.hflip for m in members)
    if hflip and not all(m.tta.hflip for m in members):
        print("test-time flip: on (" + ", ".join(f"{m.name} {m.version}" for m in members if not m.tta.hflip)
              + " had it off: no gain measured at its export)")
    return hflip


def merge_licences(licences):
    from training.licences import merge

    return merge(licences)


def manifest_for(members: list[Manifest], name: str, version: str, sha: str, hflip: bool) -> dict:
    first = members[0]
    doc = json.loads((first.path / "model.json").read_text())
    # The video and picture calibrations were fitted on the first member's scores: an ensemble
    # scores differently, so it starts without them (training.video_eval / picture_calibration --write).
    for k in ("runtime_tuning", "metrics", "video", "picture"):
        doc.pop(k, None)
    doc.update({
        "name": name, "version": version, "file": "model.onnx", "sha256": sha,
        "output": {"name": "logit", "kind": "logit",
                   "meaning": "manipulated face: the mean of the members' calibrated logits ("
                              + ", ".join(f"{m.name} {m.version}" for m in members) + ")"},
        "input": {**doc["input"], "size": ensemble_size(members)},
        "tta": {"hflip": hflip},
        "training": {
            "method": "ensemble of separately trained models (training.ensemble): logit = mean of z_i / T_i",
            # an unpacked member is recorded by the checksum of the file it was first joined from
            "members": [{"name": m.name, "version": m.version, "sha256": m.training.get("sha256_at_joining", m.sha256),
                         "temperature": m.calibration.temperature, "input_size": m.input.size,
                         "tta": m.tta.model_dump(exclude_none=True),
                         "thresholds": m.thresholds.model_dump(), "backbone": m.training.get("backbone"),
                         "command": m.training.get("command"), "identities": m.training.get("identities"),
                         "data": m.training.get("data"), "splits_file": m.training.get("splits_file")}
                        for m in members],
        },
        "data_licence": merge_licences(m.data_licence.model_dump() if m.data_licence else None for m in members),
    })
    return doc


def card_text(doc: dict, members: list[Manifest], tables: dict, cal: dict) -> str:
    """A first model card for a new ensemble folder: members, formula, calibration, the
    validation table, and the evaluation markers that `training.eval_sets --evaluate` fills."""
    from training.eval_sets import BEGIN, END

    cols = list(next(iter(tables.values())))
    rows = "\n".join(f"| {label} | " + " | ".join(f"{t[c]:.3f}" for c in cols) + " |" for label, t in tables.items())
    formula = " + ".join(f"z{i + 1} / {m.calibration.temperature:g}" for i, m in enumerate(members))
    size = ensemble_size(members)
    sizes = f"{size} px" + "".join(f" ({m.name} {m.version} at {m.input.size} px, resized in the graph)"
                                  for m in members if m.input.size != size)
    def origin(m: Manifest) -> str:
        if "unpacked_from" in m.training:
            return f"taken out of {m.training['unpacked_from']} (its card tells more)"
        return f"its own card: `{m.path / 'MODEL_CARD.md'}` at the time of joining"

    listed = "\n".join(
        f"- {m.name} {m.version}: {m.training.get('backbone_desc') or m.training.get('backbone') or '?'}, "
        f"trained on {', '.join(m.training.get('data') or ['?'])}; sha256 "
        f"{m.training.get('sha256_at_joining', m.sha256)[:16]}...; {origin(m)}" for m in members)
    return f"""# {doc['name']} {doc['version']}

Face-forgery classifier for Verity: an ensemble of {len(members)} separately trained networks joined into
one ONNX graph by `python -m training.ensemble`. logit = ({formula}) / {len(members)};
P(manipulated face) = sigmoid(logit / {cal['temperature']:.4f}). Routing: `review` at P >=
{cal['review']:.4f}, `block` at P >= {cal['block']:.4f} (recommendations fitted on the validation
people's photos and fakes: {cal['fpr_at_review']:.1%} and {cal['fpr_at_block']:.1%} of their real photos).

## Members

{listed}

They read the same crop: {sizes}, margin {members[0].crop.margin}, align =
{str(members[0].crop.align).lower()}; test-time flip {'on' if doc['tta']['hflip'] else 'off'}.

## Validation (the people the members were selected and calibrated on)

| model | {' | '.join(c.replace('-heldout', '') for c in cols)} |
|---|{'---:|' * len(cols)}
{rows}

## Evaluation

{BEGIN}
Not measured yet: `python -m training.eval_sets --out DIR --evaluate --model {doc['name']}` (or the
model folder) fills this part.
{END}
"""


def _label(i: int, m: Manifest) -> str:
    return f"member {i + 1}: {m.name} {m.version}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.ensemble", description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="two or more model folders (model.json + ONNX); an ensemble "
                                               "folder counts as its members")
    ap.add_argument("--out", type=Path, required=True, help="model folder to write")
    ap.add_argument("--csv", type=Path, required=True, help="eval.csv of `training.eval_sets --split val`")
    ap.add_argument("--version", required=True)
    ap.add_argument("--name", default=None, help="model name (default: the --out folder name)")
    ap.add_argument("--float16", action="store_true",
                    help="store the joined graph's weights as float16, computed in float32 (training.half): half "
                         "the file; the calibration is fitted on the stored graph")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="verity-members-") as tmp:
        folders = []
        for i, m in enumerate(args.models):
            got = unpack(m, Path(tmp) / str(i))
            if len(got) > 1:
                print(f"{m}: an ensemble; its {len(got)} members join one by one")
            folders.extend(got)
        if len(folders) < 2:
            ap.error("an ensemble needs two or more models")
        return _join(args, folders, argv)


def _join(args, folders: list[Path], argv) -> int:
    import onnx
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from detector.pipeline import Detector
    from training import tune_runtime as tr

    members = [load_manifest(m) for m in folders]
    check_compatible(members)
    hflip = ensemble_hflip(members)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "model.onnx"
    merged = merge(members)
    if args.float16:
        merged = half.halve(merged)
        print(f"float16 storage: {half.halved(merged)} weights halved (training.half)")
    onnx.save(merged, str(path))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    name = args.name or args.out.name
    doc = manifest_for(members, name, args.version, sha, hflip)
    if args.float16:
        doc["training"]["precision"] = PRECISION_F16
    # written now so that the runtime can load the folder to score it; the calibration follows
    (args.out / "model.json").write_text(json.dumps(doc, indent=1) + "\n")

    margin = members[0].crop.margin
    ens = f"{name} {args.version}"
    scored = {}
    with Progress(transient=True) as bar:
        for label, folder in [*((_label(i, m), m.path) for i, m in enumerate(members)), (ens, args.out)]:
            det = Detector(model=str(folder), device="cpu")
            det.warmup()
            task = bar.add_task(f"scoring validation photos: {label}", total=None)
            scored[label] = tr.collect(det, args.csv, (margin,), lambda n, t, task=task: bar.update(task, completed=n, total=t))
    tables = {label: tr.auc_table(rows, (margin,))[margin] for label, rows in scored.items()}
    cols = list(next(iter(tables.values())))
    out = Table(title=f"validation ROC-AUC ({args.csv})")
    out.add_column("model")
    for c in cols:
        out.add_column(c.replace("-heldout", ""), justify="right")
    for label, t in tables.items():
        out.add_row(label, *(f"{t[c]:.3f}" for c in cols))
    Console(width=170).print(out)
    cal = tr.calibrate(scored[ens], margin)
    doc["calibration"] = {"method": "temperature", "temperature": round(cal["temperature"], 5)}
    doc["thresholds"] = {"review": round(cal["review"], 5), "block": round(cal["block"], 5)}
    doc["metrics"] = {"validation_auc": {label: {k: round(v, 4) for k, v in t.items()} for label, t in tables.items()},
                      "calibration": {k: (round(v, 5) if isinstance(v, float) else v) for k, v in cal.items()},
                      "csv": "training.eval_sets --split val (validation people: real photos, SBI, feathered "
                             "and Poisson swaps)",
                      "command": "python -m training.ensemble " + " ".join(argv if argv is not None else sys.argv[1:])}
    (args.out / "model.json").write_text(json.dumps(doc, indent=1) + "\n")
    card = args.out / "MODEL_CARD.md"
    if card.exists():
        print(f"{card} exists: left as it is (update its prose by hand; eval_sets --evaluate fills its tables)")
    else:
        card.write_text(card_text(doc, members, tables, cal))
    print(f"wrote {args.out}: temperature {cal['temperature']:.4f}, review {cal['review']:.4f} "
          f"(FPR {cal['fpr_at_review']:.1%}, TPR {cal['tpr_at_review']:.1%}), block {cal['block']:.4f} "
          f"(FPR {cal['fpr_at_block']:.1%}, TPR {cal['tpr_at_block']:.1%})")
    best_member = max(tables[_label(i, m)]["mean"] for i, m in enumerate(members))
    gain = tables[ens]["mean"] - best_member
    print(f"mean validation AUC {tables[ens]['mean']:.4f}, {gain:+.4f} against the best member")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
