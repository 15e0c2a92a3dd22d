"""The validation people's fixed real/fake crop sets, which pick the checkpoint (training.train)
and fit the calibration (training.export), and their ROC-AUC. No torch.
"""

from __future__ import annotations

import numpy as np

from training.views import Donors, make_view


def validation_set(records, size, margin, align, seed, degrade_fixed=None, kind: str = "sbi"):
    """Fixed real/fake crops of the held-out identities: (crops uint8, labels).

    kind "sbi": each face and its Self-Blended Image; "bi": each face and a cross-identity
    blend with a donor of another validation identity (the training's own two manipulations).
    """
    donors = Donors(records) if kind == "bi" else None
    crops, labels = [], []
    for i, rec in enumerate(records):
        for fake in (False, True):
            rng = np.random.default_rng([seed, 10_000_019, i, int(fake)])
            donor = donors.pick(i, rng) if fake and donors is not None else None
            crops.append(make_view(rec, rng, fake, size, margin, align, False, degrade_fixed, donor=donor))
            labels.append(int(fake))
    return np.stack(crops), np.array(labels)


def validation_swaps(records, size, margin, align):
    """Monitoring only, never model selection: each validation face against a cross-identity
    swap made with the EVALUATION recipe (training/faceswap.py) from another validation person
    of the same source folder. Its AUC is printed per epoch to compare training recipes on
    validation people; the shipped checkpoint is chosen on VAL_CONDITIONS alone."""
    from detector.crops import crop_face
    from training import faceswap

    crops, labels = [], []
    folders = [r.source.split("/")[0] for r in records]
    views = [r.native_view() for r in records]
    for i, rec in enumerate(records):
        img, box, lms = views[i]
        crops.append(crop_face(img, box, lms, size, margin=margin, align=align))
        labels.append(0)
        pool = [j for j in range(len(records)) if folders[j] == folders[i] and records[j].identity != rec.identity]
        if not pool:
            continue
        j = pool[(i * 7919) % len(pool)]
        fake = faceswap.swap_face(views[j][0], views[j][2], img, lms)
        crops.append(crop_face(fake, box, lms, size, margin=margin, align=align))
        labels.append(1)
    return np.stack(crops), np.array(labels)


VAL_CONDITIONS = {"clean": None, "jpeg50_half": (0.5, 50)}
"""Validation sets (real vs SBI) that pick the checkpoint: clean, and whole image at half size
then JPEG 50. Runs with --p-bi > 0 add `bi` (real vs cross-identity blends, clean)."""


def selection_sets(val, cfg) -> dict:
    sets = {c: validation_set(val, cfg["size"], cfg["margin"], cfg["align"], cfg["seed"], d)
            for c, d in VAL_CONDITIONS.items()}
    if cfg.get("p_bi", 0) > 0:
        sets["bi"] = validation_set(val, cfg["size"], cfg["margin"], cfg["align"], cfg["seed"], None, "bi")
    return sets


def auc(labels, scores) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))
