"""Detection metrics of a voxel score map against a lesion mask (scikit-learn's ranking metrics underneath)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice overlap of two boolean masks (1.0 when both are empty)."""
    s = pred.sum() + truth.sum()
    return float(2 * np.logical_and(pred, truth).sum() / s) if s else 1.0


def voxel_metrics(score: np.ndarray, truth: np.ndarray, threshold: float) -> dict[str, float]:
    """Voxel AUROC, AUPRC (average precision), best Dice over all thresholds, Dice and false-positive rate at
    ``threshold``, for scores and boolean truth of the same shape (e.g. brain voxels only, flattened)."""
    s, t = score.ravel(), truth.ravel().astype(bool)
    prec, rec, _ = precision_recall_curve(t, s)
    f1 = 2 * prec * rec / np.maximum(prec + rec, 1e-12)
    pred = s > threshold
    return {
        "auroc": float(roc_auc_score(t, s)),
        "auprc": float(average_precision_score(t, s)),
        "best_dice": float(f1.max()),
        "dice": dice(pred, t),
        "fpr": float(pred[~t].mean()),
    }


def slice_auroc(slice_scores: np.ndarray, has_lesion: np.ndarray) -> float:
    """AUROC of slice-level scores for telling lesioned from lesion-free slices (NaN if only one kind)."""
    has_lesion = np.asarray(has_lesion, bool)
    if has_lesion.all() or not has_lesion.any():
        return float("nan")
    return float(roc_auc_score(has_lesion, slice_scores))
