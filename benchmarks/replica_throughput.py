"""Replicas against sequential runs: K copies of a stage trained as one program, in one run.

    .venv/bin/python benchmarks/replica_throughput.py               # K = 8, the mini recipe's three steps
    .venv/bin/python benchmarks/replica_throughput.py --stages pnet --seconds 20 --runs 300

Two comparisons, each on 1 and on N CPU devices (``JAX_NUM_CPU_DEVICES``, one
subprocess per layout; N = the cores, ``--devices``):

* **step**: the recipe's train step of each stage (``configs/cascade.py:mini``'s
  batch, optimizer, α, OHEM) as one run takes it, against the replica step
  (:func:`mtcnn_jax.train.make_train_step` with ``replicas=True``) of K replicas
  with their own α and OHEM ratio, in samples/s (median step time after
  compilation; one run's samples/s is also what K sequential runs reach). On
  N devices the single run is data-parallel over them and the replicas are split
  over them (mesh ``(N, 1)``).
* **runs** (``--runs STEPS``, P-Net only): K whole runs of ``STEPS`` steps
  (``configs/pnet.py:runlocal``'s batch, held-out eval at the end, one
  checkpoint), one after another with :func:`mtcnn_jax.train.train_and_evaluate`
  against one :func:`mtcnn_jax.replicas.train_replicas` call, wall time including
  compilation, on the same in-memory samples.

Prints one table; results and the command in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _child(args) -> None:
    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "benchmarks"))
    from train_throughput import synthetic_samples  # noqa: PLC0415

    from mtcnn_jax import config_utils, losses, models, recipe, replicas, train  # noqa: PLC0415
    from mtcnn_jax.settings import TrainSettings  # noqa: PLC0415

    cs = recipe.cascade_settings(config_utils.load_config(args.config))
    k = args.replicas
    ratios = [1.0, 0.9, 0.7, 0.5] * (k // 4 + 1)
    out = []

    def timed(fn, seconds):
        fn()  # compile
        times, end = [], time.perf_counter() + seconds
        while time.perf_counter() < end or len(times) < 5:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return float(np.median(times))

    for stage in args.stages.split(","):
        s = getattr(cs, stage)
        comp, size = dict(s.batch), models.INPUT_SIZE[stage]
        b = sum(comp.values())
        model = models.create(stage, landmarks=s.landmarks)
        tx = train.make_optimizer(s.optimizer, s.total_steps)
        data = synthetic_samples(size, 20_000)
        by_type = [np.flatnonzero(data["type"] == c) for c in range(4)]
        draw = lambda i, seed=0: {f: data[f][train.sample_batch(by_type, comp, seed, i)]  # noqa: E731
                                  for f in ("image", "type", "box", "landmarks")}
        # one run
        mesh = train.make_mesh()
        n_det = comp["negative"] + comp["positive"]
        step1 = train.make_train_step(model, tx, dict(s.alpha), losses.ohem_k(s.ohem_ratio, n_det), mesh)
        box = {"state": train.replicate(train.create_train_state(
            models.init_params(stage, jax.random.key(0), landmarks=s.landmarks), tx), mesh)}
        batch1 = train.shard_batch(draw(0), mesh)

        def one():
            box["state"], m = step1(box["state"], batch1)
            jax.block_until_ready(m)

        t1 = timed(one, args.seconds)
        del box
        # K replicas
        settings = [TrainSettings(**{**s.__dict__, "seed": i, "ohem_ratio": ratios[i]}) for i in range(k)]
        rmesh = train.make_mesh(jax.devices(), replicas.replica_shards(k, jax.device_count()))
        stepk = train.make_train_step(model, tx, None, None, rmesh, replicas=True)
        state = replicas.stack([train.create_train_state(
            models.init_params(stage, jax.random.key(i), landmarks=s.landmarks), tx) for i in range(k)])
        box = {"state": train.replicate(state, rmesh)}
        hyper = train.replicate(replicas.hyper_params(settings), rmesh)
        host = {f: np.stack([draw(0, i)[f] for i in range(k)]) for f in ("image", "type", "box", "landmarks")}
        batchk = train.shard_batch(host, rmesh, replicas=True)

        def many():
            box["state"], m = stepk(box["state"], batchk, hyper)
            jax.block_until_ready(m)

        tk = timed(many, args.seconds)
        del box
        t0 = time.perf_counter()
        replicas._replica_batch(data, by_type, settings, 1)
        host_ms = 1e3 * (time.perf_counter() - t0)
        out.append({"kind": "step", "stage": stage, "batch": b, "k": k, "one_ms": 1e3 * t1, "k_ms": 1e3 * tk,
                    "one_sps": b / t1, "k_sps": k * b / tk, "host_ms": host_ms})
        print(json.dumps(out[-1]), flush=True)

    if args.runs:
        c = config_utils.load_config("configs/pnet.py:runlocal")
        c.total_steps, c.log_every = args.runs, 50
        c.eval_every = c.checkpoint_every = args.runs
        base = TrainSettings.from_config(c)
        settings = [TrainSettings(**{**base.__dict__, "seed": i, "ohem_ratio": ratios[i]}) for i in range(k)]
        data = (synthetic_samples(12, 20_000), synthetic_samples(12, 2_000, seed=1))
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            for i, st in enumerate(settings):
                train.train_and_evaluate(st, Path(tmp) / f"seq{i}", progress=False, data=data)
            seq = time.perf_counter() - t0
            t0 = time.perf_counter()
            replicas.train_replicas(settings, Path(tmp) / "group", [Path(tmp) / f"rep{i}" for i in range(k)],
                                    progress=False, data=data)
            rep = time.perf_counter() - t0
        out.append({"kind": "runs", "stage": "pnet", "steps": args.runs, "k": k, "seq_s": seq, "rep_s": rep,
                    "batch": sum(base.batch.values())})
        print(json.dumps(out[-1]), flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/cascade.py:mini", help="cascade config whose stages are timed")
    p.add_argument("--stages", default="pnet,rnet,onet")
    p.add_argument("--replicas", type=int, default=8, help="K (default 8)")
    p.add_argument("--seconds", type=float, default=6.0, help="timed seconds per step (default 6)")
    p.add_argument("--runs", type=int, default=300, help="steps of the whole-run comparison (0: none)")
    p.add_argument("--devices", default=f"1,{os.cpu_count()}", help="CPU device counts to compare")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(args)
        return 0
    rows = []
    for d in dict.fromkeys(int(x) for x in args.devices.split(",")):
        env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(d), PYTHONPATH=str(REPO))
        cmd = [sys.executable, __file__, "--child", "--config", args.config, "--stages", args.stages,
               "--replicas", str(args.replicas), "--seconds", str(args.seconds), "--runs", str(args.runs)]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        rows += [dict(json.loads(line), devices=d) for line in r.stdout.splitlines() if line.startswith("{")]
    k = args.replicas
    print(f"{os.cpu_count()} CPU cores; K = {k} replicas with OHEM ratios 1 / 0.9 / 0.7 / 0.5 and their own seeds")
    print(f"| stage | CPU devices | batch | one run: ms/step | samples/s | {k} replicas: ms/step | samples/s "
          f"| × {k} sequential runs | host ms / {k} batches |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if r["kind"] == "step":
            print(f"| {r['stage']} | {r['devices']} | {r['batch']} | {r['one_ms']:.1f} | {r['one_sps']:,.0f} | "
                  f"{r['k_ms']:.1f} | {r['k_sps']:,.0f} | {r['k_sps'] / r['one_sps']:.2f} | {r['host_ms']:.1f} |")
    runs = [r for r in rows if r["kind"] == "runs"]
    if runs:
        print()
        print(f"| whole runs (P-Net, {runs[0]['steps']} steps, batch {runs[0]['batch']}, eval + checkpoint) "
              f"| CPU devices | {k} sequential runs (s) | {k} replicas (s) | speed-up |")
        print("|---|---:|---:|---:|---:|")
        for r in runs:
            print(f"| | {r['devices']} | {r['seq_s']:.1f} | {r['rep_s']:.1f} | {r['seq_s'] / r['rep_s']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
