"""The detector's limits and defaults, each named and explained once (cf. rq/defaults.py).

The detector takes them as arguments (media caps, face detection, aggregation, frames); these
are the values used when the caller passes none. The service's own limits (upload bytes, job
timeouts, TTLs, thresholds) are in core/defaults.py.
"""

from __future__ import annotations

# --- execution ------------------------------------------------------------------------------
DEVICES = ("auto", "cpu", "cuda")
"""Where the ONNX sessions run: `auto` takes CUDA when the provider exists (detector/runtime.py)."""

# --- media ----------------------------------------------------------------------------------
MAX_IMAGE_PIXELS = 40_000_000
"""Pixel cap for still images (width * height); above it the image is a decompression bomb."""

MAX_VIDEO_PIXELS = 3840 * 2160
"""Largest video frame (width * height) a worker will decode: 4K."""

MAX_VIDEO_SECONDS = 15 * 60.0
"""Longest video (seconds) a worker will analyse."""

MAX_VIDEO_STREAMS = 16
"""A container with more streams than this is refused (a cheap DoS otherwise)."""

MAX_DECODED_FRAMES = 20_000
"""Upper bound on frames decoded while sampling one video, whatever the container claims."""

DEFAULT_SAMPLED_FRAMES = 32
"""Frames sampled evenly over a video's duration."""

MAX_SAMPLED_FRAMES = 256
"""Upper bound on --frames / VERITY_FRAMES."""

# --- face detection -------------------------------------------------------------------------
DETECT_MAX_SIDE = 640
"""Video frames are downscaled so that their longer side is at most this before face detection
(and a photo too, unless it is large: DETECT_STILL_MAX_FACTOR)."""

DETECT_STILL_MAX_FACTOR = 2.0
"""A photo is shrunk by at most this factor for face detection (its detection side grows past
DETECT_MAX_SIDE, up to DETECT_STILL_MAX_SIDE): RetinaFace's smallest anchors are 16 px, so a
phone's 4000 px group photo shrunk to 640 px loses faces under about 100 px. Four-person group
pictures centred in a 4000 x 2250 frame (faces 45-110 px): 19% of the faces found at 640, 95%
at 1280. At 3x instead of 2x, the same frames at half size (2000 px, faces 22-55 px) went
without a face found 75 times in 172 (10 at 2x), ROC-AUC 0.518 against 0.604. The price of 2x: a
1080p photo is detected at 960 px instead of 640, 1.38x its time (bench/detector.py)."""

DETECT_STILL_MAX_SIDE = 1280
"""The largest detection side of a photo (DETECT_STILL_MAX_FACTOR). A photo whose longer side is
more than DETECT_STILL_MAX_FACTOR times this (over 2560 px) is searched in tiles of at most 2560
px instead, each shrunk by DETECT_STILL_MAX_FACTOR only, plus one pass over the whole photo at
DETECT_MAX_SIDE for its large faces (FaceDetector.detect_photo): its small faces are not lost to a
3x or larger shrink. The wide frames of training/shift_eval.py (4000 x 2250, faces 45-110 px):
77% of the faces found without tiles, 94% with; a 12 MP photo 1.58x its time (bench/detector.py)."""

DETECT_STILL_TILE_OVERLAP = 320
"""Tiles of a large photo overlap by this many of its pixels: a face up to this wide lies whole in
one tile (a larger one is found by the pass over the whole photo)."""

DETECT_SCORE_THRESHOLD = 0.8
"""RetinaFace confidence below which a candidate box is dropped."""

DETECT_NMS_IOU = 0.4
"""IoU above which overlapping face boxes are merged (non-maximum suppression)."""

MIN_FACE_PIXELS = 24
"""Faces whose shorter box side is smaller than this (in original pixels) are ignored. RetinaFace
finds nothing much smaller at the sizes it sees here; at 40 (until verity-sbi 3.1.0) over half of the
faces of a group picture at half size went unjudged, and a swapped face among them was missed
whatever the classifier would have said (training/shift_eval.py: half-size group pictures of the
held-out sources, ROC-AUC 0.55 -> 0.68)."""

MAX_FACES_PER_FRAME = 8
"""At most this many faces (largest first) are classified per frame."""

# --- aggregation ----------------------------------------------------------------------------
TOP_K_FRAMES = 4
"""Item score = mean of the top-k frames' highest face score (k capped by frames with a face)."""

# --- the hand-over-the-face check (detector/occlusion.py) -----------------------------------
OCCLUSION_FPS = 8.0
"""A short video is sampled at least this densely for the occlusion check (a hand passes in
front of a face in about a second)."""

OCCLUSION_MAX_SECONDS = 12.0
"""Videos up to this long are sampled densely for the check (a recorded check, a live segment);
a longer one is checked on its regular samples only."""

OCCLUSION_MAX_FRAMES = 64
"""Upper bound on the frames sampled for the check."""
