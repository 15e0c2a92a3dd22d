"""A tiny but real ONNX classifier for tests that exercise the plumbing, not the accuracy."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def tiny_model(directory: Path, size: int = 32, sha: str | None = None, name: str = "tiny", **manifest) -> str:
    """Write model.onnx (logit = mean of the normalised crop) and its model.json; returns the dir.

    `sha` overrides the manifest's checksum (to test that a mismatch is refused); other keyword
    arguments are merged into model.json.
    """
    import onnx
    from onnx import TensorProto, helper

    directory.mkdir(parents=True, exist_ok=True)
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])
    out = helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["N", 1])
    axes = helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3])
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 1])
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input", "axes"], ["m"], keepdims=1),
         helper.make_node("Reshape", ["m", "shape"], ["logit"])],
        "tiny", [inp], [out], initializer=[axes, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    path = directory / "model.onnx"
    onnx.save(model, path)
    doc = {"name": name, "version": "0.0.1", "sha256": sha or hashlib.sha256(path.read_bytes()).hexdigest(),
           "input": {"size": size}, "thresholds": {"review": 0.5, "block": 0.9}, **manifest}
    (directory / "model.json").write_text(json.dumps(doc))
    return str(directory)
