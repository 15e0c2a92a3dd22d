"""Verity's face-forgery detector: ONNX only, no Flask, no torch.

`Detector` (pipeline.py) is the entry point; `DetectionResult` (result.py) is its answer.
Importing this package creates no session: sessions are made when a Detector is built.
"""

from detector.result import DetectionResult, FaceEvidence, FrameEvidence, Label, MediaInfo

__all__ = ["DetectionResult", "FaceEvidence", "FrameEvidence", "Label", "MediaInfo"]
