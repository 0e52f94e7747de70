"""``mtcnn-jax sweep``: train every point of a sweep's grid, then tabulate and plot.

    mtcnn-jax sweep --config configs/sweeps/ohem.py[:VARIANT] --workdir DIR
                    [--seeds N] [--only KEY=V1,V2 ...] [--sequential] [--max-replicas K] [--max-steps N]
                    [--config.KEY=VALUE ...] [--no-progress] [--overwrite]

Each grid point trains in ``DIR/<key=value_...>/`` (see :mod:`mtcnn_jax.sweep`); with
seeds (``--seeds N`` or the sweep file's ``seeds()``) once per seed, in
``DIR/<key=value_..._seed=S>/``. ``--only KEY=V1,V2`` runs the grid points whose
swept KEY has one of those values (e.g. ``--only ohem_ratio=1,0.7``: the paper's pair;
repeat it for several keys); it must keep the sweep's reference point. Points that differ only in seed, α or OHEM ratio
train together as replicas in one compiled program (``DIR/replicas-<hash>/`` holds
their samples and checkpoints; ``--sequential`` trains them one by one).
Rerunning the same command skips finished runs and resumes interrupted ones from
their checkpoints. ``DIR`` gets ``results.csv``, ``results.md`` (one row per grid
point with the final held-out metrics), ``results.png`` (metrics against the swept
value) and ``curves.png`` (held-out metrics against the step, per run).
``--config.KEY=VALUE`` applies to every run (e.g. ``--config.data.root=DIR``).
``DIR`` must be a folder that can be written, outside the training data of every
run unless ``--overwrite``. Ctrl-C or SIGTERM stops with exit code 130, keeping
every finished run and checkpoint.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="train a grid of configs (a sweep file) and tabulate the held-out metrics",
        description=__doc__.split("\n\n")[0],
        epilog="Overrides for every run: --config.KEY=VALUE, e.g. --config.total_steps=300",
    )
    p.add_argument("--config", required=True, metavar="FILE[:ARG]",
                   help="sweep file and variant, e.g. configs/sweeps/ohem.py:runlocal, or by name: sweeps/ohem:runlocal")
    p.add_argument("--workdir", required=True, help="folder for the runs (one subfolder each) and the results")
    p.add_argument("--max-steps", type=int, default=None, metavar="N",
                   help="at most N training steps per run in this call (the rest on the next call)")
    p.add_argument("--seeds", type=int, default=None, metavar="N",
                   help="run every grid point with N seeds (default: the sweep file's seeds(), 5 for the "
                        "shipped ablations); results.md gives mean ± 95%% interval per grid point")
    p.add_argument("--only", action="append", default=[], metavar="KEY=V1,V2",
                   help="run only the grid points whose swept KEY has one of these values, e.g. "
                        "--only ohem_ratio=1,0.7 (repeat for several keys; the reference point must stay)")
    p.add_argument("--sequential", action="store_true",
                   help="train one run at a time instead of grid points that differ only in seed, alpha or "
                        "OHEM ratio together as replicas in one compiled program")
    p.add_argument("--max-replicas", type=int, default=0, metavar="K",
                   help="at most K replicas in one program (default 0: no limit)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--overwrite", action="store_true",
                   help="allow a --workdir inside the training data folder (or holding it)")
    p.set_defaults(func=run, config_overrides=[])

    from mtcnn_jax.config_utils import accept_overrides  # noqa: PLC0415

    accept_overrides(p)  # --config.KEY=VALUE, which argparse would reject


def run(args: argparse.Namespace) -> int:
    from pathlib import Path  # noqa: PLC0415

    from mtcnn_jax import runs, sweep  # noqa: PLC0415
    from mtcnn_jax.errors import UserError  # noqa: PLC0415

    if args.max_steps is not None and args.max_steps < 1:
        raise UserError(f"--max-steps must be ≥ 1, got {args.max_steps}")
    only = []
    for item in args.only:
        key, eq, values = item.partition("=")
        if not eq or not key.strip() or not values.strip():
            raise UserError(f"--only {item}: expected KEY=V1[,V2...], e.g. --only ohem_ratio=1,0.7")
        only.append((key.strip(), values))
    if args.max_replicas < 0:
        raise UserError(f"--max-replicas must be ≥ 0, got {args.max_replicas}")
    try:
        sweep.run_sweep(args.config, args.workdir, args.config_overrides, max_steps=args.max_steps,
                        progress=not args.no_progress, log=lambda s: print(s, flush=True), overwrite=args.overwrite,
                        n_seeds=args.seeds, sequential=args.sequential, max_replicas=args.max_replicas,
                        split_cpu=True, only=only)
    except BrokenPipeError:
        raise
    except OSError as err:  # the workdir went away, the disk is full, ...
        raise UserError(runs.os_error_line(err)) from None
    print((Path(args.workdir) / "results.md").read_text(), end="")
    print(f"results: {Path(args.workdir) / 'results.csv'}, results.md, results.png, curves.png")
    return 0
