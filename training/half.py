"""Weights stored as float16, computed in float32: half the model file, the same network.

An exported network's file is almost all weights. `halve` stores every large float32 weight of an
ONNX graph as float16, read through a Cast back to float32: onnxruntime turns those Casts into
float32 constants when it opens the model (its graph optimisations, on by default), so the network
still computes in float32 at the same speed; only its stored weights are rounded to float16 (11
significant bits; a logit moves by about 1e-3). Small tensors (biases, scales, the ensemble's
weights and resize factors) stay float32. `widen` gives back the plain float32 graph, for the
training tools that read weights out of a model file (training.nets.load_fused_onnx,
training.ensemble.unpack).

Used by `python -m training.ensemble ... --float16`, which halves the joined graph before it fits
the ensemble's calibration on it, so that two networks take the room of one in the repository
(and beside the GPU pack, training/gpu_pack.py).
"""

from __future__ import annotations

import numpy as np

MIN_ELEMENTS = 1024
"""Tensors smaller than this stay float32 (they weigh nothing; biases keep their precision)."""
SUFFIX = "__f16"
"""A halved weight's initializer is named after the float32 tensor the Cast gives back, plus this."""
FLOAT16_MAX = 65504.0


def halve(model, min_elements: int = MIN_ELEMENTS):
    """A copy of `model` (onnx.ModelProto) with each float32 initializer of `min_elements` or more
    stored as float16 and cast back to float32 where the graph reads it. Refuses a weight that
    float16 cannot hold (|w| > 65504)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    graph_inputs = {i.name for i in g.input}
    keep, casts = [], []
    for t in g.initializer:
        if t.data_type != TensorProto.FLOAT or int(np.prod(t.dims)) < min_elements or t.name in graph_inputs:
            keep.append(t)
            continue
        w = numpy_helper.to_array(t)
        if np.abs(w).max() > FLOAT16_MAX:
            raise ValueError(f"{t.name}: values up to {np.abs(w).max():.3g} do not fit float16")
        keep.append(numpy_helper.from_array(w.astype(np.float16), t.name + SUFFIX))
        casts.append(helper.make_node("Cast", [t.name + SUFFIX], [t.name], name=t.name + "_cast",
                                      to=TensorProto.FLOAT))
    del g.initializer[:]
    g.initializer.extend(keep)
    nodes = casts + list(g.node)  # a Cast reads only an initializer: first keeps the graph sorted
    del g.node[:]
    g.node.extend(nodes)
    onnx.checker.check_model(out)
    return out


def halved(model) -> int:
    """How many weights of `model` are stored halved (0 for a plain float32 graph)."""
    return len(_halved_casts(model.graph))


def _halved_casts(g) -> dict:
    from onnx import TensorProto

    f16 = {t.name: t for t in g.initializer if t.data_type == TensorProto.FLOAT16}
    return {n.name: (n, f16[n.input[0]]) for n in g.node
            if n.op_type == "Cast" and len(n.input) == 1 and n.input[0] in f16
            and next(a.i for a in n.attribute if a.name == "to") == TensorProto.FLOAT}


def widen(model):
    """A copy of `model` in which every weight `halve` stored as float16 is a float32 initializer
    again, under the name its Cast gave it (the same network, rounded weights and all); a model
    without halved weights comes back unchanged."""
    import onnx
    from onnx import numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    casts = _halved_casts(g)
    if not casts:
        return out
    wide = {t.name: numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), n.output[0])
            for n, t in casts.values()}
    keep = [wide.get(t.name, t) for t in g.initializer]  # in place: halve(widen(m)) is m byte for byte
    nodes = [n for n in g.node if n.name not in casts]
    del g.initializer[:]
    g.initializer.extend(keep)
    del g.node[:]
    g.node.extend(nodes)
    onnx.checker.check_model(out)
    return out


def load(path):
    """onnx.load with halved weights widened: the graph the training tools read weights from."""
    import onnx

    return widen(onnx.load(str(path)))
