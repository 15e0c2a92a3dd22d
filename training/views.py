"""Classifier crops of a cached face, as training and validation see them: real, or faked on the
fly (a Self-Blended Image, or a cross-identity blend with a donor face of similar pose), then
degraded like an upload and cropped with the runtime's own `crop_face`. numpy + Pillow: no torch.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from detector import limits
from training import data as D
from training import sbi


def jitter_box(box: np.ndarray, rng: np.random.Generator, amount: float = 0.04) -> np.ndarray:
    """Detector noise: move each box side by up to `amount` of the face size."""
    s = max(box[2] - box[0], box[3] - box[1])
    return (box + rng.uniform(-amount, amount, 4) * s).astype(np.float32)


SMALL_FACE_PX = (float(limits.MIN_FACE_PIXELS), 2.0 * limits.MIN_FACE_PIXELS)
"""Face widths of a `small` training view: from the smallest face the runtime judges to twice it."""


def make_view(rec: D.FaceRecord, rng: np.random.Generator, fake: bool, size: int, margin: float,
              align: bool, train: bool, degrade_fixed: tuple[float, int] | None = None,
              donor: D.FaceRecord | None = None, p_video: float = 0.0, xray_grid: int = 0,
              occluder: tuple[np.ndarray, np.ndarray] | None = None, lowres: bool = False,
              small: bool = False, seamless: bool = False, view: tuple | None = None,
              donor_view: tuple | None = None, clean: bool = False):
    """One classifier crop of rec: real, or fake (a Self-Blended Image, or with a donor a
    cross-identity blend), degraded like an upload (random when training, fixed otherwise).
    `occluder` (sbi.draw_occluder on the picture it starts from) is painted over it after the blend.
    With xray_grid, (crop, its Face X-ray on an xray_grid square map: zeros for a real face,
    and nothing where the occluder covers the boundary). `lowres`: the fake's blended-in face is
    re-rendered at a lower resolution than the picture (sbi.rerender), as tool output is;
    `seamless`: it is pasted in the gradient domain (sbi.gradient_blend), no colour seam. `small`
    (training only): the picture is shrunk until the face is SMALL_FACE_PX wide, a face of a
    group photo, which the runtime judges from 24 px. `view` / `donor_view` (image, box, landmarks):
    the picture to start from instead of the face's native view (a video still, sbi.video_still).
    `clean` (with a donor): the careful tool's swap of sbi.cross_blend (donor unaltered, full
    replacement, full colour match)."""
    from detector.crops import crop_face

    # blend at the detail the photo had, never upsampled
    img, box, lms = view if view is not None else rec.native_view()
    mask = None
    if fake and donor is not None:
        dimg, _, dlms = donor_view if donor_view is not None else donor.native_view()
        img, mask = sbi.cross_blend(img, box, lms, dimg, dlms, rng, lowres=lowres, seamless=seamless,
                                    clean=clean)
    elif fake:
        img, mask = sbi.self_blend(img, box, lms, rng, lowres=lowres, seamless=seamless)
    edge = sbi.boundary(mask) if xray_grid and mask is not None and float(mask.max()) > 0 else None
    if occluder is not None:
        img = sbi.occlude(img, occluder)
        if edge is not None:
            edge = edge * (1.0 - occluder[0])
    ref = img.shape[0] / rec.image.shape[0]
    if train:
        img, box, lms = sbi.degrade(img, box, lms, rng, p_video=p_video, reference=ref,
                                    face_px=SMALL_FACE_PX if small else None)
        box = jitter_box(box, rng)
    elif degrade_fixed is not None:
        scale, quality = degrade_fixed
        img, box, lms = sbi.degrade(img, box, lms, rng, jpeg_range=(quality, quality),
                                    scale_range=(scale, scale), p_scale=1.0, p_jpeg=1.0, reference=ref)
    crop = crop_face(img, box, lms, size, margin=margin, align=align)
    maps = []
    if edge is not None:
        m8 = np.clip(np.rint(edge * 255), 0, 255).astype(np.uint8)
        if m8.shape != img.shape[:2]:  # degrade() resized the image: the map follows
            m8 = np.asarray(Image.fromarray(m8).resize((img.shape[1], img.shape[0]), Image.BILINEAR))
        maps = [crop_face(np.repeat(m8[..., None], 3, axis=2), box, lms, size, margin=margin, align=align)[..., 0]]
    if train:
        crop = sbi.augment(crop, rng, also=maps)
    if not xray_grid:
        return crop
    xmap = sbi.pool(maps[0].astype(np.float32) / 255.0, xray_grid) if maps else np.zeros((xray_grid,) * 2, np.float32)
    return crop, xmap


class Donors:
    """Donor faces for cross-identity blends: for a target face, one of the faces of OTHER
    identities whose 5-landmark geometry (pose, face shape) is closest, among `candidates`
    drawn at random, from the same source folder (kind of photo) with probability `same_source`
    (Face X-ray picks donors by landmark distance too)."""

    def __init__(self, records, candidates: int = 24, same_source: float = 0.8) -> None:
        self.records = records
        self.geometry = np.stack([sbi.face_geometry(r.landmarks) for r in records]) if records else None
        self.ids = np.array([r.identity for r in records])
        folders = np.array([r.source.split("/")[0] for r in records])
        self.by_folder = {f: np.nonzero(folders == f)[0] for f in set(folders.tolist())}
        self.folders = folders
        self.candidates, self.same_source = candidates, same_source

    def pick(self, i: int, rng: np.random.Generator, same_source: bool = False) -> D.FaceRecord | None:
        """A donor for face i; `same_source`: always from face i's own source folder (one camera,
        light and encoder, as a swap between two clips of one studio)."""
        same = rng.random() < self.same_source or same_source
        pool = self.by_folder[self.folders[i]] if same else np.arange(len(self.records))
        cand = pool[rng.integers(0, len(pool), size=min(self.candidates, len(pool)))]
        cand = cand[self.ids[cand] != self.ids[i]]
        if len(cand) == 0:
            return None
        d = np.linalg.norm(self.geometry[cand] - self.geometry[i], axis=1)
        return self.records[int(cand[int(np.argmin(d))])]
