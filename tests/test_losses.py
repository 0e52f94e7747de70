"""Hand-computed checks of the α/β multi-task loss and OHEM (mtcnn_jax.losses)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtcnn_jax import losses
from mtcnn_jax.losses import LANDMARK, NEGATIVE, PART, POSITIVE

ALPHA = {"det": 1.0, "box": 0.5, "landmarks": 0.5}


def _batch():
    """Four samples, one per type, with simple numbers."""
    t = jnp.array([NEGATIVE, POSITIVE, PART, LANDMARK], jnp.int32)
    logits = jnp.array([[0.0, 0.0], [0.0, math.log(3.0)], [5.0, -5.0], [1.0, 2.0]])
    box_pred = jnp.array([[9.0] * 4, [0.1, 0.2, 0.0, 0.0], [0.0, 0.0, 0.0, 0.5], [9.0] * 4])
    box_tgt = jnp.array([[0.0] * 4, [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0] * 4])
    lm_pred = jnp.full((4, 10), 7.0).at[3].set(jnp.zeros(10).at[0].set(0.3))
    lm_tgt = jnp.zeros((4, 10))
    batch = {"type": t, "box": box_tgt, "landmarks": lm_tgt}
    return logits, box_pred, lm_pred, batch


def test_beta_table():
    b = np.asarray(losses.beta(jnp.array([NEGATIVE, POSITIVE, PART, LANDMARK])))
    np.testing.assert_array_equal(b, [[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1]])


def test_det_loss_hand_computed():
    logits, _, _, batch = _batch()
    got = np.asarray(losses.det_loss(logits, batch["type"]))
    # negative, logits (0, 0): -log(1/2); positive, (0, log 3): -log(3/4).
    assert got[0] == pytest.approx(math.log(2.0), abs=1e-6)
    assert got[1] == pytest.approx(-math.log(0.75), abs=1e-6)
    # part/landmark get label 0 (masked out later): -log softmax[0].
    assert got[2] == pytest.approx(math.log(1 + math.exp(-10.0)), abs=1e-6)


def test_box_and_landmark_losses_hand_computed():
    _, box_pred, lm_pred, batch = _batch()
    b = np.asarray(losses.box_loss(box_pred, batch["box"]))
    np.testing.assert_allclose(b, [324.0, 0.05, 0.25, 324.0], rtol=1e-6)
    lm = np.asarray(losses.landmark_loss(lm_pred, batch["landmarks"]))
    np.testing.assert_allclose(lm, [490.0, 490.0, 490.0, 0.09], rtol=1e-6)


def test_multitask_loss_masks_and_normalisation():
    logits, box_pred, lm_pred, batch = _batch()
    out = losses.multitask_loss(logits, box_pred, lm_pred, batch, ALPHA)
    det = (math.log(2.0) - math.log(0.75)) / 2  # negative + positive, mean of 2
    box = (0.05 + 0.25) / 2  # positive + part
    lm = 0.09  # the landmark sample only
    assert float(out.det) == pytest.approx(det, rel=1e-6)
    assert float(out.box) == pytest.approx(box, rel=1e-6)
    assert float(out.landmarks) == pytest.approx(lm, rel=1e-6)
    assert (float(out.n_det), float(out.n_box), float(out.n_landmarks)) == (2, 2, 1)
    assert float(out.total) == pytest.approx(det + 0.5 * box + 0.5 * lm, rel=1e-6)


def test_alpha_changes_total_exactly():
    logits, box_pred, lm_pred, batch = _batch()
    a = losses.multitask_loss(logits, box_pred, lm_pred, batch, ALPHA)
    onet = {"det": 1.0, "box": 0.5, "landmarks": 1.0}
    b = losses.multitask_loss(logits, box_pred, lm_pred, batch, onet)
    assert float(b.total - a.total) == pytest.approx(0.5 * float(a.landmarks), rel=1e-6)
    c = losses.multitask_loss(logits, box_pred, lm_pred, batch, {"det": 2.0, "box": 0.0, "landmarks": 0.0})
    assert float(c.total) == pytest.approx(2 * float(a.det), rel=1e-6)


def test_beta_changes_total_exactly():
    """Turning the part sample into a negative moves it from the box task to the det task."""
    logits, box_pred, lm_pred, batch = _batch()
    batch2 = dict(batch, type=batch["type"].at[2].set(NEGATIVE))
    out = losses.multitask_loss(logits, box_pred, lm_pred, batch2, ALPHA)
    det = (math.log(2.0) - math.log(0.75) + math.log(1 + math.exp(-10.0))) / 3
    box = 0.05
    assert float(out.total) == pytest.approx(det + 0.5 * box + 0.5 * 0.09, rel=1e-6)


def test_empty_tasks_are_zero_not_nan():
    logits, box_pred, lm_pred, batch = _batch()
    only_neg = dict(batch, type=jnp.zeros(4, jnp.int32))
    out = losses.multitask_loss(logits, box_pred, lm_pred, only_neg, ALPHA)
    assert float(out.box) == 0.0 and float(out.landmarks) == 0.0
    assert np.isfinite(float(out.total))
    no_head = losses.multitask_loss(logits, box_pred, None, batch, ALPHA)
    assert float(no_head.landmarks) == 0.0


def test_ohem_k():
    assert losses.ohem_k(0.7, 10) == 7
    assert losses.ohem_k(1.0, 10) == 10
    assert losses.ohem_k(0.01, 10) == 1
    with pytest.raises(ValueError):
        losses.ohem_k(0.0, 10)


def test_ohem_keeps_exactly_the_k_largest_labelled():
    loss = jnp.array([0.5, 9.0, 0.1, 3.0, 2.0, 7.0])
    labelled = jnp.array([True, False, True, True, True, True])  # 9.0 is a part sample
    keep = np.asarray(losses.ohem_mask(loss, labelled, 3))
    np.testing.assert_array_equal(keep, [0, 0, 0, 1, 1, 1])
    # k above the number labelled keeps every labelled one.
    np.testing.assert_array_equal(np.asarray(losses.ohem_mask(loss, labelled, 6)), [1, 0, 1, 1, 1, 1])


def test_ohem_gradient_is_zero_for_dropped_samples():
    t = jnp.array([NEGATIVE, NEGATIVE, POSITIVE, POSITIVE, PART], jnp.int32)
    # det losses: sample 0 easy, 1 hard, 2 hard, 3 easy.
    logits = jnp.array([[4.0, -4.0], [-1.0, 1.0], [2.0, -2.0], [-3.0, 3.0], [0.0, 0.0]])
    batch = {"type": t, "box": jnp.zeros((5, 4)), "landmarks": jnp.zeros((5, 10))}

    def f(lg):
        return losses.multitask_loss(lg, jnp.zeros((5, 4)), None, batch, ALPHA, k=2).total

    g = np.asarray(jax.grad(f)(logits))
    np.testing.assert_array_equal(g[[0, 3, 4]], 0.0)
    assert np.all(np.abs(g[[1, 2]]) > 0)
    # The kept losses are the mean over the 2 kept samples.
    out = losses.multitask_loss(logits, jnp.zeros((5, 4)), None, batch, ALPHA, k=2)
    l1 = -jax.nn.log_softmax(logits[1])[0]
    l2 = -jax.nn.log_softmax(logits[2])[1]
    assert float(out.det) == pytest.approx(float(l1 + l2) / 2, rel=1e-6)
    assert float(out.n_det) == 2
    # ohem_ratio = 1.0 (k = all labelled) equals no OHEM.
    full = losses.multitask_loss(logits, jnp.zeros((5, 4)), None, batch, ALPHA, k=4)
    none = losses.multitask_loss(logits, jnp.zeros((5, 4)), None, batch, ALPHA, k=None)
    assert float(full.total) == pytest.approx(float(none.total), rel=1e-7)


def test_eval_sums_and_finish_eval_hand_computed():
    """Held-out statistics beside the loss: the same task losses without OHEM, padding masked out."""
    logits, box_pred, lm_pred, batch = _batch()
    batch = dict(batch, valid=jnp.array([True, True, True, False]))  # the landmark sample is padding
    sums = losses.eval_sums(logits, box_pred, lm_pred, batch, threshold=0.7)
    m = losses.finish_eval(sums, ALPHA)
    assert tuple(m) == losses.EVAL_METRICS
    det = (math.log(2.0) - math.log(0.75)) / 2
    assert m["det"] == pytest.approx(det, rel=1e-6)
    assert m["box"] == pytest.approx((0.05 + 0.25) / 2, rel=1e-6)  # positive 0.1² + 0.2², part 0.5²
    assert m["landmarks"] == 0.0 and m["landmark_error"] == 0.0  # no valid landmark sample
    assert m["loss"] == pytest.approx(det + 0.5 * 0.15, rel=1e-6)
    assert m["accuracy"] == 1.0  # (0, 0) → non-face for the negative; (0, log 3) → face
    assert m["recall"] == 1.0  # p(face) = 0.75 ≥ 0.7
    assert m["box_error"] == pytest.approx((0.075 + 0.125) / 2, rel=1e-6)
    assert losses.finish_eval(losses.eval_sums(logits, box_pred, lm_pred, batch, 0.8), ALPHA)["recall"] == 0.0
