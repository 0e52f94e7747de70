"""Train state, optimizer, the data-parallel step, eval metrics (mtcnn_jax.train)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mtcnn_jax import losses, models, train

REPO = Path(__file__).resolve().parents[1]


def _opt(**kw):
    c = ml_collections.ConfigDict(
        dict(name="sgd", learning_rate=0.1, momentum=0.9, weight_decay=5e-4, schedule="step",
             warmup_steps=0, decay_at=(0.5, 0.75), decay_factor=0.1)
    )
    c.update(kw)
    return c


def test_step_schedule():
    s = train.make_schedule(_opt(), 100)
    assert float(s(0)) == pytest.approx(0.1)
    assert float(s(60)) == pytest.approx(0.01)
    assert float(s(80)) == pytest.approx(0.001)
    c = train.make_schedule(_opt(schedule="cosine", warmup_steps=10), 110)
    assert float(c(5)) == pytest.approx(0.05)
    assert float(c(110)) == pytest.approx(0.0, abs=1e-7)


# One data-parallel step over 4 host CPU devices vs one step on 1 device, same global
# batch. Runs in a subprocess: XLA_FLAGS must be set before jax is imported.
_DP_SCRIPT = textwrap.dedent(
    """
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import jax, numpy as np, ml_collections
    from mtcnn_jax import losses, models, train
    assert jax.device_count() == 4, jax.devices()
    jax.config.update("jax_default_matmul_precision", "highest")
    opt = ml_collections.ConfigDict(dict(name="sgd", learning_rate=0.1, momentum=0.9,
        weight_decay=5e-4, schedule="constant", warmup_steps=0, decay_at=(), decay_factor=0.1))
    model = models.create("pnet", landmarks=True)
    params = jax.device_get(models.init_params("pnet", jax.random.key(0), landmarks=True))
    rng = np.random.default_rng(0)
    n = 32
    batch = dict(image=rng.integers(0, 256, (n, 12, 12, 3), dtype=np.uint8),
                 type=np.tile(np.array([0, 0, 0, 1, 1, 2, 3, 3], np.int32), n // 8),
                 box=rng.normal(0, 0.1, (n, 4)).astype(np.float32),
                 landmarks=rng.uniform(0, 1, (n, 10)).astype(np.float32))
    rng.shuffle(batch["type"])
    alpha = dict(det=1.0, box=0.5, landmarks=0.5)
    k = losses.ohem_k(0.7, int(np.sum(batch["type"] < 2)))
    tx = train.make_optimizer(opt, 10)
    out = {}
    for nd in (1, 4):
        mesh = train.make_mesh(jax.devices()[:nd])
        step = train.make_train_step(model, tx, alpha, k, mesh)
        state = train.replicate(train.create_train_state(params, tx), mesh)
        for _ in range(2):  # two steps: the second one exercises the momentum state
            state, m = step(state, train.shard_batch(batch, mesh))
        out[nd] = (jax.device_get(state.params), float(m["loss"]), float(m["n_det"]))
    (p1, l1, c1), (p4, l4, c4) = out[1], out[4]
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p4)))
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(params)))
    print("DIFF", diff, "MOVED", moved, "LOSS", l1, l4, "NDET", c1, c4)
    assert c1 == c4 == k, (c1, c4, k)
    assert abs(l1 - l4) < 1e-5, (l1, l4)
    assert moved > 1e-3, moved
    assert diff < 1e-6, diff
    """
)


def test_data_parallel_step_equals_single_device_step():
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    r = subprocess.run([sys.executable, "-c", _DP_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert "DIFF" in r.stdout


def test_eval_metrics_hand_checked():
    model = models.create("rnet", landmarks=True)
    params = models.init_params("rnet", jax.random.key(1), landmarks=True)
    # Zero every head so the outputs are known: logits 0 (p = 0.5), box 0, landmarks 0.
    for head in ("face", "box", "landmarks"):
        params[head] = jax.tree.map(jnp.zeros_like, params[head])
    n = 5
    samples = dict(
        image=np.zeros((n, 24, 24, 3), np.uint8),
        type=np.array([0, 1, 2, 3, 1], np.int32),
        box=np.full((n, 4), 0.5, np.float32),
        landmarks=np.tile(np.array([0.3] * 5 + [0.4] * 5, np.float32), (n, 1)),
    )
    alpha = dict(det=1.0, box=0.5, landmarks=1.0)
    step = train.make_eval_step(model, alpha, threshold=0.5)
    m = train.evaluate(step, params, samples, alpha, batch_size=4)  # 2 batches, one padded
    assert m["det"] == pytest.approx(np.log(2.0), rel=1e-5)
    assert m["box"] == pytest.approx(4 * 0.25, rel=1e-5)
    assert m["landmarks"] == pytest.approx(5 * 0.09 + 5 * 0.16, rel=1e-5)
    assert m["loss"] == pytest.approx(np.log(2.0) + 0.5 + 1.25, rel=1e-5)
    # argmax of equal logits is 0 = non-face: the negative is right, both positives wrong.
    assert m["accuracy"] == pytest.approx(1 / 3)
    assert m["recall"] == 1.0  # p = 0.5 ≥ 0.5
    assert m["box_error"] == pytest.approx(0.5, rel=1e-5)
    assert m["landmark_error"] == pytest.approx(0.5, rel=1e-5)
