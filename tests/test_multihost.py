"""Several hosts, on one machine: two processes joined by ``jax.distributed.initialize``.

Each process gets two CPU devices (``JAX_NUM_CPU_DEVICES``) and JAX's gloo
collectives, so the mesh spans four devices on two "hosts". Both run P-Net's
training for a few steps from one workdir, launched as the README says
(``mtcnn-jax train ... --distributed --coordinator --num-processes
--process-id``): each draws its half of every global batch, process 0 writes the
logs and the sample store, Orbax writes the checkpoint collectively. A third
process, alone with four devices, trains the same params on the same global
batches and restores the two-process checkpoint: the params must agree to float
rounding.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import REPO

STEPS = 3
OVERRIDES = [("data.wider_images", "12"), ("data.landmark_faces", "60"), ("total_steps", str(STEPS)),
             ("checkpoint_every", str(STEPS)), ("eval_every", str(STEPS)), ("log_every", "1"),
             ("batch.negative", "48"), ("batch.positive", "16"), ("batch.part", "16"), ("batch.landmark", "32")]

# The reference: one process, four devices, the same global batches the two processes draw
# (process 0's half, then process 1's: the order make_array_from_process_local_data lays them out).
# argv: workdir of the two-process run (its sample store and checkpoint are read back), data root,
# overrides, output .npz
_REFERENCE = textwrap.dedent(
    """
    import json, sys
    workdir, root, overrides, out = sys.argv[1:]
    import jax
    import numpy as np
    from mtcnn_jax import config_utils, losses, models, runs, train
    from mtcnn_jax.data.store import FIELDS
    from mtcnn_jax.settings import TrainSettings
    assert jax.device_count() == 4
    c = TrainSettings.of(config_utils.get("configs/pnet.py:runlocal", [("data.root", root)] + json.loads(overrides)))
    train_set, _ = train.cut_samples(c, workdir, write=False, progress=False)
    by_type = [np.flatnonzero(train_set["type"] == t) for t in range(len(losses.SAMPLE_TYPES))]
    mesh = train.make_mesh()
    tx = train.make_optimizer(c.optimizer, c.total_steps)
    params = models.init_params("pnet", jax.random.key(c.seed), landmarks=c.landmarks)
    init = {"init" + jax.tree_util.keystr(k): np.asarray(v) for k, v in
            jax.tree_util.tree_flatten_with_path(jax.device_get(params))[0]}
    k = losses.ohem_k(c.ohem_ratio, c.batch["negative"] + c.batch["positive"]) if c.ohem_ratio < 1 else None
    step = train.make_train_step(models.create("pnet", landmarks=c.landmarks), tx, dict(c.alpha), k, mesh)
    state = train.replicate(train.create_train_state(params, tx), mesh)
    for s in range(c.total_steps):
        idx = np.concatenate([train.sample_batch(by_type, dict(c.batch), c.seed, s, p, 2) for p in range(2)])
        state, _ = step(state, train.shard_batch({f: train_set[f][idx] for f in FIELDS}, mesh))
    flat = lambda tree, pre: {pre + jax.tree_util.keystr(k): np.asarray(v)
                              for k, v in jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]}
    template = train.replicate(train.create_train_state(params, tx), mesh)
    manager, two, start = runs.open_checkpoints(f"{workdir}/checkpoints", template, 1)
    manager.close()
    assert start == c.total_steps, start
    np.savez(out, **flat(state.params, "one"), **flat(two.params, "two"), **init)
    print("DONE")
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices))
    env.pop("XLA_FLAGS", None)
    return env


@pytest.mark.slow
def test_two_processes_train_like_one_on_the_same_global_batch(data_dir, tmp_path):
    workdir, port = tmp_path / "w", str(_free_port())
    overrides = [f"--config.{k}={v}" for k, v in [("data.root", str(data_dir))] + OVERRIDES]
    procs = [subprocess.Popen([sys.executable, "-m", "mtcnn_jax.cli", "train", "--config", "configs/pnet.py:runlocal",
                               "--workdir", str(workdir), "--no-progress", "--distributed", "--coordinator",
                               f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(p), *overrides],
                              cwd=REPO, env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for p in range(2)]
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=400))
        finally:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, out + err[-3000:]
    assert "final held-out" in outs[0][0] and "final held-out" not in outs[1][0], outs

    r = subprocess.run([sys.executable, "-c", _REFERENCE, str(workdir), str(data_dir), json.dumps(OVERRIDES),
                        str(tmp_path / "params.npz")], cwd=REPO, env=_env(4), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and "DONE" in r.stdout, r.stdout + r.stderr[-3000:]

    z = np.load(tmp_path / "params.npz")
    names = [f[3:] for f in z.files if f.startswith("one")]
    assert len(names) >= 10
    moved = max(float(np.max(np.abs(z["one" + n] - z["init" + n]))) for n in names)
    assert moved > 1e-3, moved  # three steps of SGD changed the params
    for n in names:
        np.testing.assert_allclose(z["two" + n], z["one" + n], rtol=1e-5, atol=1e-6, err_msg=n)
    # Process 0 alone wrote the logs: one train line per step and the val lines at 0 and STEPS.
    lines = [json.loads(s) for s in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines if m["split"] == "train"] == list(range(1, STEPS + 1))
    assert [m["step"] for m in lines if m["split"] == "val"] == [0, STEPS]


def test_distributed_options_need_distributed(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mtcnn_jax.cli", "train", "--config", "pnet:runlocal", "--workdir",
                        str(tmp_path / "w"), "--num-processes", "2"], cwd=REPO, env=_env(1), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0 and "go with --distributed" in r.stderr and "Traceback" not in r.stderr, r.stderr
