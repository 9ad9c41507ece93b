"""The paper's four segmentation metrics, from one confusion matrix (numpy only).

Notation of Long, Shelhamer and Darrell (section 5): ``n_ij`` is the number of pixels of
class ``i`` predicted to belong to class ``j``, ``n_cl`` the number of classes and
``t_i = sum_j n_ij`` the number of pixels of class ``i``. Then

* pixel accuracy:          ``sum_i n_ii / sum_i t_i``
* mean accuracy:           ``(1/n_cl) sum_i n_ii / t_i``
* mean IU:                 ``(1/n_cl) sum_i n_ii / (t_i + sum_j n_ji - n_ii)``
* frequency weighted IU:   ``(sum_k t_k)^-1 sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii)``

Classes whose ratio is 0/0 are left out of the means, as the paper's ``score.py`` does with
``np.nanmean``: a class absent from the ground truth has no accuracy, and a class absent from
both ground truth and prediction has no IU (a class predicted but absent from the truth has
IU 0 and does count).

The matrix is a plain sum of counts, so per-process matrices add up exactly
(:meth:`ConfusionMatrix.merge`) for distributed evaluation.
"""
from __future__ import annotations

from typing import Dict, List, Union

import numpy as np


def _nanmean(values: np.ndarray) -> float:
    """Mean over the non-nan entries; nan (without a warning) when there are none."""
    present = values[~np.isnan(values)]
    return float(present.mean()) if present.size else float("nan")


class ConfusionMatrix:
    """Accumulates ``n_ij`` (rows: ground truth ``i``, columns: prediction ``j``) over batches.

    Pixels whose target is ``ignore_index`` or lies outside ``[0, num_classes)`` are not
    counted (VOC's 255 "void" border, for example).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, not {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self._matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    @classmethod
    def from_matrix(cls, matrix: np.ndarray, ignore_index: int = 255) -> "ConfusionMatrix":
        """A confusion matrix holding ``matrix`` (e.g. after an all-reduce of :attr:`matrix`)."""
        matrix = np.asarray(matrix)
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"confusion matrix must be square, not {matrix.shape}")
        cm = cls(matrix.shape[0], ignore_index)
        cm._matrix += matrix.astype(np.int64)
        return cm

    @property
    def matrix(self) -> np.ndarray:
        """A copy of the counts ``n_ij``, ``num_classes x num_classes`` int64."""
        return self._matrix.copy()

    def reset(self) -> None:
        self._matrix[:] = 0

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        """Count one batch of predicted labels against ground-truth labels.

        ``pred`` and ``target`` are integer arrays of one shape (any shape: ``H x W``,
        ``N x H x W``, flat). Counting is one ``np.bincount`` over ``n * target + pred``.
        """
        pred = np.asarray(pred)
        target = np.asarray(target)
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {pred.shape} differs from target shape {target.shape}")
        for what, a in (("prediction", pred), ("target", target)):
            if a.dtype.kind not in "iub":
                raise TypeError(f"{what} must hold integer labels, not {a.dtype}")
        n = self.num_classes
        valid = (target != self.ignore_index) & (target >= 0) & (target < n)
        t = target[valid].astype(np.int64)
        p = pred[valid].astype(np.int64)
        if p.size and (p.min() < 0 or p.max() >= n):
            raise ValueError(f"predicted labels must lie in [0, {n}), found {p.min()}..{p.max()}")
        self._matrix += np.bincount(n * t + p, minlength=n * n).reshape(n, n)

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Add ``other``'s counts to this one (in place) and return self."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes}-class counts into {self.num_classes}-class ones")
        self._matrix += other._matrix
        return self

    def __iadd__(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        return self.merge(other)

    def scores(self) -> Dict[str, Union[float, List[float]]]:
        """The paper's four metrics as fractions in [0, 1], plus per-class IU and accuracy.

        Keys: ``pixel_acc``, ``mean_acc``, ``mean_iu``, ``fw_iu`` (floats; nan when nothing
        has been counted), ``per_class_iu`` and ``per_class_acc`` (lists, nan where 0/0).
        """
        hist = self._matrix.astype(np.float64)
        n_ii = np.diag(hist)
        t = hist.sum(axis=1)  # t_i: ground-truth pixels of class i
        predicted = hist.sum(axis=0)  # sum_j n_ji: pixels predicted as class i
        union = t + predicted - n_ii
        total = t.sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            acc = np.where(t > 0, n_ii / t, np.nan)
            iu = np.where(union > 0, n_ii / union, np.nan)
        present = t > 0
        return {
            "pixel_acc": float(n_ii.sum() / total) if total > 0 else float("nan"),
            "mean_acc": _nanmean(acc),
            "mean_iu": _nanmean(iu),
            "fw_iu": float((t[present] * iu[present]).sum() / total) if total > 0 else float("nan"),
            "per_class_iu": [float(v) for v in iu],
            "per_class_acc": [float(v) for v in acc],
        }

    def __repr__(self) -> str:
        return f"ConfusionMatrix(num_classes={self.num_classes}, pixels={int(self._matrix.sum())})"
