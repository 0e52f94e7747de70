"""The CPU train-step formulation (mtcnn_jax.train_nets and train's chunked step) against the flax modules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtcnn_jax import losses, models, train, train_nets
from mtcnn_jax.settings import OptimizerSettings

STAGES = [("pnet", True), ("rnet", False), ("onet", True)]  # with and without a landmark head


def _batch(stage: str, n: int, seed: int = 0) -> dict:
    """``n`` random windows of every sample type (the store's layout)."""
    rng = np.random.default_rng(seed)
    size = models.INPUT_SIZE[stage]
    types = np.tile(np.arange(4, dtype=np.int32), n // 4 + 1)[:n]
    rng.shuffle(types)
    return dict(image=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), type=types,
                box=rng.normal(0, 0.2, (n, 4)).astype(np.float32),
                landmarks=rng.uniform(0, 1, (n, 10)).astype(np.float32))


def _params(stage: str, landmarks: bool, seed: int = 0):
    """Random params with non-zero biases and PReLU slopes, so that every gradient path is exercised."""
    params = models.init_params(stage, jax.random.key(seed), landmarks=landmarks)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    leaves = [x + 0.05 * jax.random.normal(k, x.shape) if x.ndim == 1 else x for x, k in zip(leaves, keys)]
    return jax.tree.unflatten(tree, leaves)


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


@pytest.mark.parametrize("stage,landmarks", STAGES)
def test_forward_equals_modules(stage, landmarks):
    params = _params(stage, landmarks)
    images = _batch(stage, 24)["image"]
    ours = train_nets.forward(stage)(params, images)
    ref = models.create(stage, landmarks=landmarks).apply({"params": params}, models.normalize(images))
    assert (ours.landmarks is None) == (ref.landmarks is None) == (not landmarks)
    for a, b in zip(ours, ref):
        if b is not None:
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_pnet_forward_on_whole_images_equals_module():
    """P-Net stays fully convolutional: on a 30×41 image the output map is 10×16 (stride 2, ceil pooling)."""
    params = _params("pnet", False)
    image = np.random.default_rng(3).integers(0, 256, (2, 30, 41, 3), dtype=np.uint8)
    ours = train_nets.pnet(params, image)
    ref = models.create("pnet", landmarks=False).apply({"params": params}, models.normalize(image))
    assert ours.logits.shape == ref.logits.shape == (2, 10, 16, 2)
    np.testing.assert_allclose(ours.box, ref.box, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stage,landmarks", STAGES)
def test_gradients_equal_modules(stage, landmarks):
    """The multitask loss's gradient (with OHEM) through both formulations agrees to 1e-5 relative per leaf."""
    params = _params(stage, landmarks)
    batch = {k: jnp.asarray(v) for k, v in _batch(stage, 40, seed=1).items()}
    alpha = dict(det=1.0, box=0.5, landmarks=1.0)
    k = losses.ohem_k(0.7, int(np.sum(np.asarray(batch["type"]) < 2)))
    model = models.create(stage, landmarks=landmarks)

    def loss(fwd):
        def f(p):
            logits, box, lm = train._flat(fwd(p, batch["image"]))
            return losses.multitask_loss(logits, box, lm, batch, alpha, k).total
        return f

    modules = lambda p, x: model.apply({"params": p}, models.normalize(x))  # noqa: E731
    g_ref = jax.grad(loss(modules))(params)
    g_ours = jax.grad(loss(train_nets.forward(stage)))(params)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g_ours), jax.tree.leaves(g_ref)):
        assert _rel(a, b) < 1e-5, (jax.tree_util.keystr(path), _rel(a, b))


def test_max_pool_gradient_by_hand():
    """Caffe ceil pooling 2×2 / 2 of a 3×3 map: windows rows {0,1},{2} × cols {0,1},{2}; the gradient goes
    to each window's maximum, and to the first cell of a tied window."""
    x = jnp.array([[1.0, 5.0, 2.0], [7.0, 3.0, 9.0], [4.0, 8.0, 6.0]])[None, :, :, None]
    y, vjp = jax.vjp(lambda v: train_nets.max_pool_ceil(v, 2, 2), x)
    np.testing.assert_array_equal(y[0, :, :, 0], [[7.0, 9.0], [8.0, 6.0]])
    (dx,) = vjp(jnp.array([[1.0, 2.0], [3.0, 4.0]])[None, :, :, None])
    np.testing.assert_array_equal(dx[0, :, :, 0], [[0, 0, 0], [1, 0, 2], [0, 3, 4]])
    tied = jnp.ones((1, 2, 2, 1))
    (dt,) = jax.vjp(lambda v: train_nets.max_pool_ceil(v, 2, 2), tied)[1](jnp.full((1, 1, 1, 1), 5.0))
    np.testing.assert_array_equal(dt[0, :, :, 0], [[5, 0], [0, 0]])


def test_overlapping_max_pool_gradient_by_hand():
    """3×3 / 2 pooling of a 3×5 map: one row of windows, cols {0,1,2} and {2,3,4}, sharing col 2. A cell
    that is the maximum of both windows takes both gradients; otherwise each goes to its own maximum."""
    x = jnp.array([[1.0, 2.0, 3.0, 0.0, 1.0], [0.0, 4.0, 9.0, 5.0, 2.0], [3.0, 1.0, 2.0, 8.0, 7.0]])[None, :, :, None]
    g = jnp.array([[1.0, 2.0]])[None, :, :, None]
    y, vjp = jax.vjp(lambda v: train_nets.max_pool_ceil(v, 3, 2), x)
    np.testing.assert_array_equal(y[0, :, :, 0], [[9.0, 9.0]])
    np.testing.assert_array_equal(vjp(g)[0][0, :, :, 0], [[0, 0, 0, 0, 0], [0, 0, 3, 0, 0], [0, 0, 0, 0, 0]])
    x2 = x.at[0, 2, 3, 0].set(10.0)
    y2, vjp2 = jax.vjp(lambda v: train_nets.max_pool_ceil(v, 3, 2), x2)
    np.testing.assert_array_equal(y2[0, :, :, 0], [[9.0, 10.0]])
    np.testing.assert_array_equal(vjp2(g)[0][0, :, :, 0], [[0, 0, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 2, 0]])


def test_partial_last_window_gradient_by_hand():
    """3×3 / 2 Caffe pooling of a 3×6 map: column windows {0,1,2}, {2,3,4} and the partial {4,5}; the last
    two share column 4. Values are checked bit for bit."""
    row = jnp.array([1.0, 2.0, 3.0, 4.0, 8.0, 7.0])
    x = jnp.zeros((3, 6)).at[1].set(row)[None, :, :, None]
    g = jnp.array([[1.0, 2.0, 4.0]])[None, :, :, None]
    y, vjp = jax.vjp(lambda v: train_nets.max_pool_ceil(v, 3, 2), x)
    np.testing.assert_array_equal(y[0, :, :, 0], [[3.0, 8.0, 8.0]])
    np.testing.assert_array_equal(vjp(g)[0][0, 1, :, 0], [0, 0, 1, 0, 6, 0])  # column 4 takes windows 1 and 2
    y2, vjp2 = jax.vjp(lambda v: train_nets.max_pool_ceil(v, 3, 2), x.at[0, 1, 5, 0].set(9.0))
    np.testing.assert_array_equal(y2[0, :, :, 0], [[3.0, 8.0, 9.0]])
    np.testing.assert_array_equal(vjp2(g)[0][0, 1, :, 0], [0, 0, 1, 0, 2, 4])
    assert not np.any(vjp2(g)[0][0, [0, 2]])
    with pytest.raises(ValueError, match="stride 3, window 2"):
        train_nets.max_pool_ceil(x, 2, 3)


def test_chunk_bounds_by_hand():
    assert train_nets.chunk_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert train_nets.chunk_bounds(448, 64) == [(i, i + 64) for i in range(0, 448, 64)]
    assert train_nets.chunk_bounds(5, 64) == [(0, 5)]
    assert train_nets.chunk_bounds(9, 2) == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 9)]


def test_formulation_switch(monkeypatch):
    monkeypatch.delenv("MTCNN_JAX_NETS", raising=False)
    assert train_nets.formulation(jax.devices("cpu")) == "cpu"
    monkeypatch.setenv("MTCNN_JAX_NETS", "modules")
    assert train_nets.formulation(jax.devices("cpu")) == "modules"
    with pytest.raises(ValueError, match="unknown formulation"):
        train.make_train_step(models.create("pnet"), None, {}, None, train.make_mesh(), formulation="gpu")


@pytest.mark.parametrize("stage,landmarks,chunk", [("pnet", True, 7), ("pnet", False, 64), ("rnet", False, 16),
                                                   ("onet", True, 5)])
def test_chunked_step_equals_modules_step(stage, landmarks, chunk):
    """Two optimizer steps (momentum, weight decay, OHEM) of the chunked CPU step equal the one-program
    step of the modules: same metrics, same params to float rounding. Chunks of uneven sizes, and a
    batch that fits in one chunk (run as one program)."""
    opt = OptimizerSettings(name="sgd", learning_rate=0.05, momentum=0.9, weight_decay=5e-4, schedule="constant",
                            warmup_steps=0, decay_at=(), decay_factor=0.1, clip_grad_norm=0.0)
    tx = train.make_optimizer(opt, 10)
    params = jax.device_get(_params(stage, landmarks))  # host copies: the step donates its state
    batch = _batch(stage, 30, seed=2)
    alpha = dict(det=1.0, box=0.5, landmarks=0.5)
    k = losses.ohem_k(0.7, int(np.sum(batch["type"] < 2)))
    mesh = train.make_mesh()
    model = models.create(stage, landmarks=landmarks)
    out = {}
    for form in ("modules", "cpu"):
        step = train.make_train_step(model, tx, alpha, k, mesh, formulation=form, chunk=chunk)
        state = train.replicate(train.create_train_state(params, tx), mesh)
        for i in range(2):
            state, m = step(state, train.shard_batch(_batch(stage, 30, seed=2 + i), mesh))
        out[form] = jax.device_get((state.params, m))
    (p_ref, m_ref), (p_cpu, m_cpu) = out["modules"], out["cpu"]
    for key in ("n_det", "n_box", "n_landmarks"):
        assert m_cpu[key] == m_ref[key]
    assert m_cpu["n_det"] == k
    for key in ("loss", "det", "box", "landmarks", "grad_norm"):
        assert m_cpu[key] == pytest.approx(m_ref[key], rel=1e-5, abs=1e-7), key
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(p_ref), jax.tree.leaves(params)))
    assert moved > 1e-3
    for a, b in zip(jax.tree.leaves(p_cpu), jax.tree.leaves(p_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * moved)


def test_chunked_eval_equals_modules_eval():
    params = _params("rnet", True)
    batch = dict(_batch("rnet", 37, seed=4), valid=np.arange(37) < 33)
    model = models.create("rnet", landmarks=True)
    alpha = dict(det=1.0, box=0.5, landmarks=0.5)
    ref = jax.device_get(train.make_eval_step(model, alpha, 0.6, formulation="modules")(params, batch))
    ours = train.make_eval_step(model, alpha, 0.6, formulation="cpu", chunk=8)(params, batch)
    assert set(ours) == set(ref)
    for key in ref:
        assert float(ours[key]) == pytest.approx(float(ref[key]), rel=1e-5, abs=1e-5), key

