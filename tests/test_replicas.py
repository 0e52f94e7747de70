"""Replicas (mtcnn_jax.replicas): K runs trained as one program equal K separate runs.

The multi-device cases run in subprocesses with two CPU devices (``JAX_NUM_CPU_DEVICES``
must be set before JAX starts): the replicas split over the devices (mesh ``(2, 1)``)
and, for the step, also one device per replica batch split (mesh ``(1, 2)``).
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtcnn_jax import config_utils, losses, replicas
from mtcnn_jax.settings import TrainSettings

REPO = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str, devices: int = 2) -> str:
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices))
    env.pop("XLA_FLAGS", None)
    r = subprocess.run([sys.executable, "-c", script, *args], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


# The step: K = 4 replicas with their own params, batches, α and OHEM ratio (1.0 = off), two
# optimizer steps (the second uses the momentum), against four single-run steps. Every
# formulation: the flax modules, the CPU formulation in one program (P-Net) and in chunks of
# 3 windows (R-Net, O-Net: several chunks per replica).
_STEP_SCRIPT = textwrap.dedent(
    """
    import jax, numpy as np
    jax.config.update("jax_default_matmul_precision", "highest")
    from mtcnn_jax import losses, models, train, replicas
    from mtcnn_jax.settings import OptimizerSettings
    assert jax.device_count() == 2, jax.devices()
    opt = OptimizerSettings(name="sgd", learning_rate=0.05, momentum=0.9, weight_decay=5e-4, schedule="constant",
                            warmup_steps=0, decay_at=(), decay_factor=0.1, clip_grad_norm=0.0)

    def batch(stage, n, seed):
        rng = np.random.default_rng(seed)
        s = models.INPUT_SIZE[stage]
        t = np.tile(np.array([0, 0, 0, 1, 1, 2, 3, 3], np.int32), n // 8)
        rng.shuffle(t)
        return dict(image=rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8), type=t,
                    box=rng.normal(0, 0.1, (n, 4)).astype(np.float32),
                    landmarks=rng.uniform(0, 1, (n, 10)).astype(np.float32))

    K, n = 4, 16
    alphas = [(1, .5, .5), (1, .5, 0), (1, 1, 1), (.5, .5, 1)]
    ratios = [1.0, 0.7, 0.5, 0.9]
    cases = [("pnet", True, "modules", None), ("pnet", True, "cpu", None), ("rnet", False, "cpu", 3),
             ("onet", True, "cpu", 3)]
    for stage, lm, form, chunk in cases:
        model = models.create(stage, landmarks=lm)
        tx = train.make_optimizer(opt, 10)
        params = [jax.device_get(models.init_params(stage, jax.random.key(s), landmarks=lm)) for s in range(K)]
        batches = [[batch(stage, n, 100 * r + t) for t in range(2)] for r in range(K)]
        n_det = int(np.sum(batches[0][0]["type"] < 2))
        single = []
        mesh1 = train.make_mesh(jax.devices()[:1])
        for r in range(K):
            a = dict(zip(losses.TASKS, map(float, alphas[r])))
            k = None if ratios[r] == 1 else losses.ohem_k(ratios[r], n_det)
            step = train.make_train_step(model, tx, a, k, mesh1, formulation=form, chunk=chunk)
            st = train.replicate(train.create_train_state(params[r], tx), mesh1)
            for t in range(2):
                st, m = step(st, train.shard_batch(batches[r][t], mesh1))
            single.append((jax.device_get(st.params), float(m["loss"])))
        for shards in (2, 1):
            mesh = train.make_mesh(jax.devices(), replica_shards=shards)
            step = train.make_train_step(model, tx, None, None, mesh, formulation=form, chunk=chunk, replicas=True)
            st = train.replicate(replicas.stack([train.create_train_state(p, tx) for p in params]), mesh)
            hyper = dict(alpha=np.array(alphas, np.float32),
                         keep=np.array([n_det if q == 1 else losses.ohem_k(q, n_det) for q in ratios], np.int32))
            hyper = train.replicate(hyper, mesh)
            for t in range(2):
                b = {f: np.stack([batches[r][t][f] for r in range(K)]) for f in batches[0][0]}
                st, m = step(st, train.shard_batch(b, mesh, replicas=True), hyper)
            got = jax.device_get(st.params)
            assert int(jax.device_get(st.step)[0]) == 2
            for r in range(K):
                p, ref = jax.tree.map(lambda x: x[r], got), single[r][0]
                rel = max(float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
                          for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(ref)))
                moved = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(ref),
                                                                        jax.tree.leaves(params[r])))
                print(stage, form, chunk, shards, r, "rel", rel, "moved", moved)
                assert moved > 1e-2, moved
                assert rel < 5e-6, (stage, form, chunk, shards, r, rel)
                assert abs(float(m["loss"][r]) - single[r][1]) <= 1e-5 * abs(single[r][1]), (m["loss"][r], single[r][1])
    print("OK")
    """
)


@pytest.mark.slow
def test_replica_step_equals_separate_steps():
    _run(_STEP_SCRIPT)


# The loop: three P-Net replicas (own seed, α, OHEM; flip and colour augmentation on) trained
# 3 steps, stopped, resumed from the stacked checkpoint to step 6, against three separate
# train_and_evaluate runs on the same sample sets.
_LOOP_SCRIPT = textwrap.dedent(
    """
    import sys, json
    from pathlib import Path
    import jax, numpy as np
    jax.config.update("jax_default_matmul_precision", "highest")
    from mtcnn_jax import config_utils, replicas, train
    from mtcnn_jax.settings import TrainSettings
    out = Path(sys.argv[1])
    rng = np.random.default_rng(0)
    def samples(n):
        return dict(image=rng.integers(0, 256, (n, 12, 12, 3), dtype=np.uint8),
                    type=np.repeat(np.arange(4, dtype=np.int32), n // 4),
                    box=rng.normal(0, 0.1, (n, 4)).astype(np.float32),
                    landmarks=rng.uniform(0, 1, (n, 10)).astype(np.float32))
    data = (samples(400), samples(80))
    settings = []
    for seed, (lm, box), ratio in ((0, (0.5, 0.5), 0.7), (1, (0.0, 0.5), 1.0), (2, (1.0, 1.0), 0.5)):
        c = config_utils.load_config("configs/pnet.py:runlocal")
        c.seed, c.alpha.landmarks, c.alpha.box, c.ohem_ratio = seed, lm, box, ratio
        c.batch.negative, c.batch.positive, c.batch.part, c.batch.landmark = 12, 4, 4, 8
        c.total_steps, c.log_every, c.eval_every, c.checkpoint_every = 6, 2, 3, 3
        c.optimizer.learning_rate = 0.05
        c.augment.flip, c.augment.colour = True, 0.2
        settings.append(TrainSettings.from_config(c))
    runs = [out / f"r{i}" for i in range(3)]
    if sys.argv[2] in ("both", "first"):
        st, _ = replicas.train_replicas(settings, out / "group", runs, progress=False, max_steps=3, data=data)
        assert int(jax.device_get(st.step)[0]) == 3
    if sys.argv[2] == "first":
        print("OK")
        sys.exit(0)
    st, val = replicas.train_replicas(settings, out / "group", runs, progress=False, data=data)
    assert int(jax.device_get(st.step)[0]) == 6
    for i, s in enumerate(settings):
        ref, ref_val = train.train_and_evaluate(s, out / f"single{i}", progress=False, data=data)
        got = replicas.replica_state(st, i)
        rel = max(float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
                  for a, b in zip(jax.tree.leaves(got.params), jax.tree.leaves(jax.device_get(ref.params))))
        print("replica", i, "rel", rel, val[i]["loss"], ref_val["loss"])
        assert rel < 1e-5, (i, rel)
        assert abs(val[i]["loss"] - ref_val["loss"]) <= 1e-5 * abs(ref_val["loss"]), (val[i], ref_val)
        log = [json.loads(l) for l in (runs[i] / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in log if r["split"] == "val"] == [0, 3, 6], log
        assert json.loads((runs[i] / "config.json").read_text())["seed"] == s.seed
    print("OK")
    """
)


@pytest.mark.slow
def test_train_replicas_equals_separate_runs_and_resumes(tmp_path):
    _run(_LOOP_SCRIPT, str(tmp_path), "both")


@pytest.mark.slow
def test_replica_group_resumes_on_another_device_count(tmp_path):
    # Stopped on 2 CPU devices (the replicas split over them), resumed by a process with one device:
    # the checkpoint is restored into the new mesh and the runs end as separate runs do.
    _run(_LOOP_SCRIPT, str(tmp_path), "first")
    _run(_LOOP_SCRIPT, str(tmp_path), "second", devices=1)


def test_traced_ohem_count_keeps_the_same_samples_as_a_static_one():
    # Losses of 6 samples, 4 labelled (β_det = 1): 0.9, 0.1, 0.5, 0.7 at 0, 2, 3, 5.
    x = jnp.array([0.9, 5.0, 0.1, 0.5, 4.0, 0.7])
    labelled = jnp.array([True, False, True, True, False, True])
    traced = jax.jit(lambda k: losses.ohem_mask(x, labelled, k))
    for k, hand in ((1, [1, 0, 0, 0, 0, 0]), (2, [1, 0, 0, 0, 0, 1]), (3, [1, 0, 0, 1, 0, 1]), (4, [1, 0, 1, 1, 0, 1])):
        np.testing.assert_array_equal(losses.ohem_mask(x, labelled, k), hand)
        np.testing.assert_array_equal(traced(jnp.int32(k)), hand)
    np.testing.assert_array_equal(traced(jnp.int32(6)), [1, 0, 1, 1, 0, 1])  # never an unlabelled sample


def _settings(**overrides) -> TrainSettings:
    c = config_utils.load_config("configs/onet.py:runlocal")
    for key, value in overrides.items():
        config_utils.apply_override(c, key, repr(value))
    return TrainSettings.from_config(c)


def test_group_accepts_seed_alpha_ohem_and_names_anything_else():
    a = _settings(**{"data.seed": 0})
    b = _settings(**{"seed": 3, "alpha.landmarks": 0.0, "ohem_ratio": 1.0, "data.seed": 0})
    replicas.check_group([a, b])
    assert replicas.can_share(a, b)
    with pytest.raises(ValueError, match=r"replica 1 differs from replica 0 in total_steps \(10 vs 150\)"):
        replicas.check_group([a, _settings(**{"total_steps": 10, "data.seed": 0})])
    assert not replicas.can_share(a, _settings(**{"optimizer.learning_rate": 0.1, "data.seed": 0}))
    # Without data.seed each run cuts its windows with its own seed: not one group, unless the samples are given.
    with pytest.raises(ValueError, match=r"in data.seed \(3 vs 0\)"):
        replicas.check_group([_settings(), _settings(seed=3)])
    replicas.check_group([_settings(), _settings(seed=3)], cut=False)


def test_hyper_params_and_replica_shards():
    # onet runlocal: 24 negatives + 8 positives = 32 det-labelled samples a batch.
    h = replicas.hyper_params([_settings(), _settings(**{"ohem_ratio": 1.0, "alpha.box": 1.0}),
                               _settings(ohem_ratio=0.5)])
    np.testing.assert_array_equal(h["keep"], [22, 32, 16])  # round(0.7 · 32) = 22
    np.testing.assert_array_equal(h["alpha"], [[1, 0.5, 1], [1, 1, 1], [1, 0.5, 1]])
    assert h["alpha"].dtype == np.float32 and h["keep"].dtype == np.int32
    assert [replicas.replica_shards(k, 2) for k in (1, 2, 3, 8, 20)] == [1, 2, 1, 2, 2]
    assert [replicas.replica_shards(k, 4) for k in (2, 6, 8)] == [2, 2, 4]


def test_stack_unstack_round_trip():
    trees = [{"a": np.full((2,), i, np.float32), "b": {"c": np.int32(i)}} for i in range(3)]
    s = replicas.stack(trees)
    assert s["a"].shape == (3, 2) and s["b"]["c"].shape == (3,)
    for i, t in enumerate(replicas.unstack(s, 3)):
        np.testing.assert_array_equal(t["a"], [i, i])
        assert int(t["b"]["c"]) == i


def test_resuming_a_group_with_other_settings_is_refused(tmp_path):
    """A replica group with checkpoints resumes only with the members it was started with: another α for
    one replica, or another number of replicas, stops in one line before anything is trained."""
    import json  # noqa: PLC0415

    from mtcnn_jax import files, train  # noqa: PLC0415
    from mtcnn_jax.errors import UserError  # noqa: PLC0415

    def member(seed, lm=0.5, log_every=2):
        c = config_utils.load_config("configs/pnet.py:runlocal")
        c.seed, c.alpha.landmarks, c.log_every = seed, lm, log_every
        c.batch.negative, c.batch.positive, c.batch.part, c.batch.landmark = 12, 4, 4, 8
        return TrainSettings.from_config(c)

    group = tmp_path / "group"
    (group / train.CHECKPOINTS_DIR / "3").mkdir(parents=True)
    settings = [member(0), member(1)]
    files.write_json(group / "replicas.json", {"members": ["r0", "r1"], "settings": [s.to_dict() for s in settings]})
    train.check_same_replicas(group, settings)
    train.check_same_replicas(group, [member(0, log_every=5), member(1)])  # logging may change
    fix = f": a rerun would resume them; use a new --workdir, or delete {group / train.CHECKPOINTS_DIR} to start them again"
    with pytest.raises(UserError) as err:
        replicas.train_replicas([member(0), member(1, lm=0.0)], group, [tmp_path / "r0", tmp_path / "r1"],
                                progress=False, data=({}, {}))  # refused before the (given) samples are read
    assert str(err.value) == (f"{group} holds replicas started with other settings "
                              f"(replica 1: alpha.landmarks: 0.5 -> 0.0){fix}")
    with pytest.raises(UserError) as err:
        train.check_same_replicas(group, [member(0), member(1), member(2)])
    assert str(err.value) == f"{group} holds a group of 2 replicas, not 3{fix}"
    assert json.loads((group / "replicas.json").read_text())["settings"][1]["alpha"]["landmarks"] == 0.5
