"""Calibration of a classifier's logits on validation faces: temperature scaling and the
review/block thresholds at a false-positive rate. numpy only; used by training.export and
training.tune_runtime (and through it training.ensemble).
"""

from __future__ import annotations

import numpy as np


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """argmin_T NLL(sigmoid(logit / T)), by a log-spaced grid then a finer grid around it."""
    y = labels.astype(np.float64)
    z = logits.astype(np.float64)

    def nll(t):
        p = np.clip(sigmoid(z / t), 1e-7, 1 - 1e-7)
        return -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))

    grid = np.exp(np.linspace(np.log(0.05), np.log(50), 400))
    t = grid[int(np.argmin([nll(g) for g in grid]))]
    fine = np.linspace(t * 0.97, t * 1.03, 121)
    return float(fine[int(np.argmin([nll(g) for g in fine]))])


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of 0/1 labels under probabilities already clipped away from 0
    and 1."""
    return float(-np.mean(labels * np.log(probs) + (1 - labels) * np.log(1 - probs)))


def rate_threshold(real_probs: np.ndarray, fpr: float) -> float:
    """Smallest threshold with at most `fpr` of the real faces at or above it."""
    q = float(np.quantile(real_probs, 1 - fpr, method="higher"))
    return float(min(1.0, np.nextafter(q, 2.0)))

