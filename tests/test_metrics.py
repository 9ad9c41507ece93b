"""The paper's four metrics against hand-computed cases and a slow per-pixel reference."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from fcn_deploy.metrics import ConfusionMatrix

pytestmark = pytest.mark.runtime  # needs no PyTorch: .ci/jetson-env runs it on Python 3.8 and 3.10

# 3 classes, 10 pixels; the last one is void (255).
TARGET = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 255])
PRED = np.array([0, 0, 1, 1, 2, 2, 2, 2, 0, 1])
# By hand: truth 0 -> predicted 0,0,1; truth 1 -> 1,2; truth 2 -> 2,2,2,0.
#   n = [[2, 1, 0],      t = (3, 2, 4), column sums (3, 2, 4), 9 pixels counted
#        [0, 1, 1],
#        [1, 0, 3]]
# pixel acc = (2 + 1 + 3) / 9
# accuracies: 2/3, 1/2, 3/4
# IU: 2 / (3 + 3 - 2) = 1/2, 1 / (2 + 2 - 1) = 1/3, 3 / (4 + 4 - 3) = 3/5
HAND_MATRIX = [[2, 1, 0], [0, 1, 1], [1, 0, 3]]
HAND = {
    "pixel_acc": 6 / 9,
    "mean_acc": (2 / 3 + 1 / 2 + 3 / 4) / 3,
    "mean_iu": (1 / 2 + 1 / 3 + 3 / 5) / 3,
    "fw_iu": (3 * 1 / 2 + 2 * 1 / 3 + 4 * 3 / 5) / 9,
}


def test_hand_computed_three_classes():
    cm = ConfusionMatrix(3)
    cm.update(PRED, TARGET)
    assert cm.matrix.tolist() == HAND_MATRIX
    s = cm.scores()
    for key, value in HAND.items():
        assert s[key] == pytest.approx(value, abs=1e-12), key
    assert s["per_class_iu"] == pytest.approx([1 / 2, 1 / 3, 3 / 5])
    assert s["per_class_acc"] == pytest.approx([2 / 3, 1 / 2, 3 / 4])


def test_any_shape_same_counts():
    flat = ConfusionMatrix(3)
    flat.update(PRED, TARGET)
    image = ConfusionMatrix(3)
    image.update(PRED.reshape(2, 5), TARGET.reshape(2, 5))
    batch = ConfusionMatrix(3)
    batch.update(PRED.reshape(1, 2, 5).astype(np.uint8), TARGET.reshape(1, 2, 5).astype(np.uint8))
    assert np.array_equal(flat.matrix, image.matrix) and np.array_equal(flat.matrix, batch.matrix)


def test_ignore_index_and_out_of_range_targets_are_not_counted():
    cm = ConfusionMatrix(3, ignore_index=255)
    # Void, a label beyond the classes and a negative label: their predictions (even
    # out-of-range ones) are never looked at.
    cm.update(np.array([0, 200, 1, 9, 2]), np.array([0, 255, 1, 7, -1]))
    assert cm.matrix.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]

    custom = ConfusionMatrix(3, ignore_index=2)
    custom.update(np.array([0, 1, 1]), np.array([0, 2, 1]))
    assert custom.matrix.sum() == 2


def test_absent_classes_are_nan_and_left_out_of_the_means():
    # 4 classes: class 3 appears in neither truth nor prediction; class 2 is predicted
    # once but never true (IU 0, counted; accuracy undefined, not counted).
    cm = ConfusionMatrix(4)
    cm.update(np.array([0, 0, 1, 2]), np.array([0, 0, 1, 1]))
    s = cm.scores()
    assert math.isnan(s["per_class_iu"][3]) and math.isnan(s["per_class_acc"][3])
    assert math.isnan(s["per_class_acc"][2]) and s["per_class_iu"][2] == 0.0
    assert s["per_class_iu"][:3] == pytest.approx([1.0, 1 / 2, 0.0])
    assert s["mean_iu"] == pytest.approx((1.0 + 1 / 2 + 0.0) / 3)
    assert s["mean_acc"] == pytest.approx((1.0 + 1 / 2) / 2)
    assert s["pixel_acc"] == pytest.approx(3 / 4)
    assert s["fw_iu"] == pytest.approx((2 * 1.0 + 2 * 1 / 2) / 4)
    for key in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"):
        assert 0.0 <= s[key] <= 1.0


def test_empty_matrix_scores_are_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = ConfusionMatrix(3).scores()
    assert all(math.isnan(s[k]) for k in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"))
    assert all(math.isnan(v) for v in s["per_class_iu"])


def test_perfect_prediction_scores_one():
    labels = np.array([[0, 1], [2, 2]])
    cm = ConfusionMatrix(5)
    cm.update(labels, labels)
    s = cm.scores()
    assert s["pixel_acc"] == s["mean_acc"] == s["mean_iu"] == s["fw_iu"] == 1.0


def slow_scores(pred, target, n, ignore):
    """The metrics straight from their definitions, one pixel at a time, no matrix."""
    pairs = [(int(t), int(p)) for t, p in zip(target.ravel(), pred.ravel()) if t != ignore and 0 <= t < n]
    correct = sum(t == p for t, p in pairs)
    accs, ius, weighted = [], [], 0.0
    for c in range(n):
        truth = [i for i, (t, _) in enumerate(pairs) if t == c]
        predicted = [i for i, (_, p) in enumerate(pairs) if p == c]
        hits = len(set(truth) & set(predicted))
        union = len(set(truth) | set(predicted))
        if truth:
            accs.append(hits / len(truth))
        if union:
            ius.append(hits / union)
            weighted += len(truth) * hits / union
    return {
        "pixel_acc": correct / len(pairs),
        "mean_acc": sum(accs) / len(accs),
        "mean_iu": sum(ius) / len(ius),
        "fw_iu": weighted / len(pairs),
    }


def test_random_batches_match_slow_reference():
    rng = np.random.default_rng(0)
    n = 6
    cm = ConfusionMatrix(n)
    preds, targets = [], []
    for _ in range(3):
        target = rng.integers(0, n - 1, size=(2, 9, 11))  # class n-1 never true
        target[rng.random(target.shape) < 0.1] = 255
        pred = np.where(rng.random(target.shape) < 0.6, target, rng.integers(0, n, size=target.shape))
        pred[target == 255] = rng.integers(0, n, size=int((target == 255).sum()))
        cm.update(pred, target)
        preds.append(pred)
        targets.append(target)
    expected = slow_scores(np.concatenate(preds), np.concatenate(targets), n, 255)
    s = cm.scores()
    for key, value in expected.items():
        assert s[key] == pytest.approx(value, abs=1e-12), key


def test_merge_and_iadd_equal_one_pass():
    rng = np.random.default_rng(1)
    pred, target = rng.integers(0, 4, size=(2, 50)), rng.integers(0, 4, size=(2, 50))
    whole = ConfusionMatrix(4)
    whole.update(pred, target)
    a, b = ConfusionMatrix(4), ConfusionMatrix(4)
    a.update(pred[0], target[0])
    b.update(pred[1], target[1])
    a += b
    assert np.array_equal(a.matrix, whole.matrix)
    c = ConfusionMatrix(4).merge(b)
    assert np.array_equal(c.matrix, b.matrix)
    # Distributed reduction: sum the raw matrices, rebuild.
    rebuilt = ConfusionMatrix.from_matrix(a.matrix)
    assert rebuilt.scores() == whole.scores()
    with pytest.raises(ValueError):
        a.merge(ConfusionMatrix(5))


def test_reset_and_matrix_is_a_copy():
    cm = ConfusionMatrix(3)
    cm.update(PRED, TARGET)
    cm.matrix[:] = 0
    assert cm.matrix.sum() == 9
    cm.reset()
    assert cm.matrix.sum() == 0


def test_bad_input():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros((2, 3), int), np.zeros((3, 2), int))
    with pytest.raises(TypeError, match="integer"):
        cm.update(np.zeros(3, np.float32), np.zeros(3, int))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        cm.update(np.array([0, 3]), np.array([0, 1]))
