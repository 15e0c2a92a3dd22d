"""The detector: media -> faces -> crops -> classifier -> aggregate -> DetectionResult.

Build one `Detector` per process, after any fork (see workers/worker.py), and reuse it: it
holds two onnxruntime sessions. `analyze_*` never raises for bad media; it returns an
`unreadable` result with the reason. It raises only for faults of the installation (model
missing, provider not obtained), which must be fixed by an operator, not retried.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from detector import limits, media, occlusion, perceptual
from detector.aggregate import label_for, occlusion_reasons, picture_score, video_score, with_occlusion
from detector.classifier import Classifier
from detector.crops import crop_face
from detector.faces import FaceDetector, retinaface_onnx_bytes
from detector.manifest import Manifest, load_manifest
from detector.result import DetectionResult, FaceEvidence, FrameEvidence, Label, MediaInfo
from detector.runtime import DEVICES, cpu_threads, make_session


class Detector:
    def __init__(self, model: str | os.PathLike | None = None, device: str = "auto",
                 frames: int = limits.DEFAULT_SAMPLED_FRAMES, threads: int | None = None,
                 manifest: Manifest | None = None, *, models_dir: str | os.PathLike | None = None,
                 spin: bool = False, occlusion_check: bool = True) -> None:
        """Everything is passed in (the caller's Settings hold the operator's choices): `model`
        and `models_dir` as load_manifest takes them, `device` one of DEVICES, `frames` sampled
        per video, `threads` per session (default: the CPUs this process may use), `spin` for
        onnxruntime's idle threads (make_session), `occlusion_check` for videos and frame
        sequences (detector/occlusion.py)."""
        if device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
        self.device = device
        self.frames = frames
        if not 1 <= self.frames <= limits.MAX_SAMPLED_FRAMES:
            raise ValueError(f"frames must be between 1 and {limits.MAX_SAMPLED_FRAMES}")
        self.manifest = manifest or load_manifest(model, models_dir=models_dir)
        self.threads = threads or cpu_threads()
        """onnxruntime threads per session (default: the CPUs this process may use)."""
        self.classifier = Classifier(self.manifest, device, threads, spin)
        session, face_provider = make_session(retinaface_onnx_bytes(), device, threads, spin)
        self.face_detector = FaceDetector(session)
        self.provider = self.classifier.provider
        self.face_provider = face_provider
        self.top_k = limits.TOP_K_FRAMES
        self.occlusion_check = occlusion_check

    @property
    def model_name(self) -> str:
        return self.manifest.name

    @property
    def model_version(self) -> str:
        return self.manifest.version

    def warmup(self) -> None:
        """One run through each session so that the first real item pays no set-up cost."""
        rng = np.random.default_rng(0)
        img = rng.integers(0, 255, size=(360, 640, 3), dtype=np.uint8)
        self.face_detector.detect(img)
        size = self.manifest.input.size
        self.classifier(np.zeros((2, size, size, 3), dtype=np.uint8))

    def classify(self, crops: np.ndarray) -> np.ndarray:
        return self.classifier(crops)

    # --- entry points -----------------------------------------------------------------------

    def analyze_path(self, path: str | os.PathLike, progress=None, *, hashes: bool = False,
                     frames: int | None = None, classify: int | None = None) -> DetectionResult:
        """Analyse a file. progress(done, total) is called after each sampled video frame. With
        `hashes`, the result also carries the media's perceptual hashes (PDQ of an image with its
        rotations and mirror images, PDQ of each sampled video frame), made from the same decode.
        `frames` (default: the detector's) is how many video frames to sample, `classify` (default:
        `frames`) how many of them the classifier scores, for a caller with its own time budget
        (a live segment)."""
        return self._analyze(Path(path), progress, hashes, frames or self.frames, classify)

    def analyze_bytes(self, data: bytes) -> DetectionResult:
        return self._analyze(data)

    def analyze_image(self, rgb: np.ndarray) -> DetectionResult:
        t0 = time.perf_counter()
        info = MediaInfo(kind="image", format="array", width=rgb.shape[1], height=rgb.shape[0], frame_count=1)
        timings = {"decode": 0.0, "detect": 0.0, "crop": 0.0}
        crops: list[np.ndarray] = []
        frames = [self._detect_frame(0, 0.0, rgb, crops, timings, still=True)]
        return self._finish(frames, crops, info, timings, t0)

    def analyze_frames(self, frames: list[tuple[float, np.ndarray]], *, classify: int | None = None) -> DetectionResult:
        """Analyse a sequence of frames (timestamp in seconds, RGB uint8), e.g. the JPEG frames of
        a live segment, as one short video: faces are found in every frame, the classifier scores
        at most `classify` of them (default: the detector's `frames`), the occlusion check runs."""
        t0 = time.perf_counter()
        timings = {"decode": 0.0, "detect": 0.0, "crop": 0.0}
        if not frames:
            return self._unreadable(media.UnreadableMedia("empty", "no frames"), None, timings, t0)
        h, w = frames[0][1].shape[:2]
        span = frames[-1][0] - frames[0][0]
        info = MediaInfo(kind="video", format="frames", width=w, height=h, duration=span or None,
                         frame_count=len(frames))
        crops: list[np.ndarray] = []
        tracks: list[occlusion.Track] | None = [] if self.occlusion_check else None
        evidence = [self._detect_frame(i, ts, rgb, crops, timings, tracks) for i, (ts, rgb) in enumerate(frames)]
        return self._finish(evidence, crops, info, timings, t0, tracks=tracks, classify=classify or self.frames)

    # --- internals --------------------------------------------------------------------------

    def _result(self, label: Label, score, reasons, info, frames, timings, hashes=None) -> DetectionResult:
        return DetectionResult(label=label, score=score, reasons=reasons, model_name=self.model_name,
                               model_version=self.model_version, provider=self.provider, media=info,
                               frames=frames, timings_ms={k: round(v, 2) for k, v in timings.items()},
                               hashes=hashes.to_dict() if hashes is not None else None)

    def _unreadable(self, err: media.UnreadableMedia, info, timings, t0) -> DetectionResult:
        timings["total"] = (time.perf_counter() - t0) * 1000
        return self._result(Label.UNREADABLE, None, [f"{err.reason}: {err.message}"], info, [], timings)

    def _detect_frame(self, index: int, ts: float, rgb: np.ndarray, crops: list, timings,
                      tracks: list | None = None, still: bool = False) -> FrameEvidence:
        """Faces of one frame, their crops appended to `crops`. A `still` (a photo) is detected at
        a larger side when it is large, and in tiles when it is very large (FaceDetector.detect_photo),
        a video frame at the detector's side."""
        t = time.perf_counter()
        faces = self.face_detector.detect_photo(rgb) if still else self.face_detector.detect(rgb)
        t2 = time.perf_counter()
        timings["detect"] += (t2 - t) * 1000
        if tracks is not None:
            small, scale = occlusion.small_copy(rgb)
            tracks.append(occlusion.Track(ts, small, scale, [(f.box.tolist(), f.score, f.landmarks.tolist()) for f in faces]))
        size, align = self.manifest.input.size, self.manifest.crop.align
        margins = self.manifest.crop_margins if still else self.manifest.video_crop_margins
        evidence = []
        for f in faces:
            crops.append(np.stack([crop_face(rgb, f.box, f.landmarks, size, m, align) for m in margins]))  # (V, S, S, 3)
            evidence.append(FaceEvidence(box=[round(float(v), 1) for v in f.box],
                                         landmarks=[[round(float(x), 1), round(float(y), 1)] for x, y in f.landmarks],
                                         detection_score=round(f.score, 4)))
        timings["crop"] += (time.perf_counter() - t2) * 1000
        return FrameEvidence(index=index, timestamp=ts, faces=evidence)

    def _analyze(self, src, progress=None, hashes: bool = False, n: int | None = None,
                 classify: int | None = None) -> DetectionResult:
        n = n or self.frames
        t0 = time.perf_counter()
        timings = {"decode": 0.0, "detect": 0.0, "crop": 0.0}
        if hashes:
            timings["hash"] = 0.0
        pdq: list = []
        vpdq: list = []
        info = None
        try:
            kind, _ = media.identify(src)
        except media.UnreadableMedia as e:
            return self._unreadable(e, None, timings, t0)
        crops: list[np.ndarray] = []
        frames: list[FrameEvidence] = []
        tracks: list[occlusion.Track] | None = None
        try:
            if kind == "image":
                t = time.perf_counter()
                rgb, info = media.load_image(src)
                timings["decode"] += (time.perf_counter() - t) * 1000
                if hashes:
                    t = time.perf_counter()
                    pdq = perceptual.pdq_dihedral(rgb)
                    timings["hash"] += (time.perf_counter() - t) * 1000
                frames.append(self._detect_frame(0, 0.0, rgb, crops, timings, still=True))
                del rgb
            else:
                info_out: list[MediaInfo] = []
                dense = (limits.OCCLUSION_FPS, limits.OCCLUSION_MAX_SECONDS, limits.OCCLUSION_MAX_FRAMES)
                it = media.sample_video(src, n, info_out=info_out,
                                        dense=dense if self.occlusion_check else None)
                tracks = [] if self.occlusion_check else None
                while True:
                    t = time.perf_counter()
                    frame = next(it, None)
                    timings["decode"] += (time.perf_counter() - t) * 1000
                    if frame is None:
                        break
                    info = info_out[0]
                    if hashes:
                        t = time.perf_counter()
                        h = perceptual.pdq_of_rgb(frame.image)
                        vpdq.append(perceptual.VpdqFrame(h.hex, h.quality, round(frame.timestamp, 3)))
                        timings["hash"] += (time.perf_counter() - t) * 1000
                    frames.append(self._detect_frame(frame.index, frame.timestamp, frame.image, crops, timings,
                                                     tracks))
                    if progress is not None:
                        progress(len(frames), max(n, len(frames)))
                info = info_out[0] if info_out else info
        except media.UnreadableMedia as e:
            return self._unreadable(e, info, timings, t0)
        found = perceptual.MediaHashes(pdq=pdq, vpdq=vpdq) if hashes and (pdq or vpdq) else None
        return self._finish(frames, crops, info, timings, t0, found, tracks, classify or n)

    def _finish(self, frames, crops, info, timings, t0, hashes=None, tracks=None,
                classify: int | None = None) -> DetectionResult:
        t = time.perf_counter()
        kind = info.kind if info else "image"
        if crops:
            # Dense sampling (the occlusion check) detects faces in every frame; the classifier
            # scores at most `classify` of them (default: `frames`), spread evenly, as many as
            # without the check.
            chosen = _spread([i for i, fr in enumerate(frames) if fr.faces], classify or self.frames)
            offsets = np.cumsum([0] + [len(fr.faces) for fr in frames])
            picked = [offsets[i] + j for i in chosen for j in range(len(frames[i].faces))]
            scores = self.classifier(np.stack([crops[k] for k in picked]),
                                     hflip=self.manifest.video_hflip if kind == "video" else None)
            it = iter(scores.tolist())
            for i in chosen:
                for face in frames[i].faces:
                    face.fake_score = round(next(it), 4)
        timings["classify"] = (time.perf_counter() - t) * 1000
        base = (video_score(frames, self.top_k, self.manifest.video) if kind == "video"
                else picture_score(frames, self.manifest.picture))
        occ = None
        if tracks is not None and base is not None:
            t = time.perf_counter()
            occ = occlusion.check(tracks)
            timings["occlusion"] = (time.perf_counter() - t) * 1000
        score = with_occlusion(base, occ)
        threshold = self.manifest.thresholds.review
        label, reasons = label_for(score, threshold, frames, kind, self.manifest.picture.aggregate)
        if occ is not None and occ.checked:
            reasons = [*occlusion_reasons(occ, base, score, threshold), *reasons]
        timings["total"] = (time.perf_counter() - t0) * 1000
        result = self._result(label, None if score is None else round(score, 4), reasons, info, frames, timings,
                              hashes)
        result.classifier_score = None if base is None else round(base, 4)
        result.occlusion = occ.to_dict() if occ is not None else None
        return result


def _spread(indices: list[int], k: int) -> list[int]:
    """At most k of the indices, evenly spread (all of them when there are k or fewer)."""
    if len(indices) <= k:
        return indices
    picks = np.linspace(0, len(indices) - 1, k).round().astype(int)
    return [indices[i] for i in sorted(set(picks.tolist()))]
