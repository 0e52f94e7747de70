"""``mtcnn-jax train-cascade``: the whole recipe — P-Net, mining, R-Net, mining, O-Net, WIDER AP.

    mtcnn-jax train-cascade --config configs/cascade.py:mini --workdir DIR
                            [--stop-after STEP] [--config.KEY=VALUE ...] [--no-progress] [--overwrite]

Each step runs in its own subfolder of DIR and leaves a ``done.json``; rerunning
on the same DIR skips finished steps and resumes an interrupted one (see
:mod:`mtcnn_jax.recipe`); Ctrl-C or SIGTERM stops with exit code 130, keeping
every finished step. DIR must be a folder that can be written, outside the
training data (``config.data_root``) unless ``--overwrite``. The trained
cascade is ``DIR/params.msgpack``: ``mtcnn-jax detect --weights DIR`` and
``MTCNN(weights=DIR)`` load it. ``--stop-after STEP`` stops once that step is
done (e.g. ``rnet_samples``: R-Net's mined windows, for the ablation sweeps'
``--config.samples``); the same command without it goes on from there.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train-cascade",
        help="train P-Net, R-Net and O-Net in sequence with hard-sample mining, then evaluate",
        description=__doc__.split("\n\n")[0],
        epilog="Config overrides: --config.KEY=VALUE, e.g. --config.pnet.total_steps=5000 --config.data_root=DIR",
    )
    p.add_argument("--config", required=True, metavar="FILE[:ARG]",
                   help="cascade config file and variant, e.g. configs/cascade.py:mini, or by name: cascade:tiny")
    p.add_argument("--workdir", required=True, help="folder for every stage's samples, checkpoints and results")
    p.add_argument("--stop-after", metavar="STEP",
                   help="stop once this step is done (pnet_samples, pnet, rnet_samples, rnet, onet_samples, onet, "
                        "calibrate); rerun without it to go on")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--overwrite", action="store_true",
                   help="allow a --workdir inside the training data folder (or holding it)")
    p.set_defaults(func=run, config_overrides=[])

    from mtcnn_jax.config_utils import accept_overrides  # noqa: PLC0415

    accept_overrides(p)  # --config.KEY=VALUE, which argparse would reject


def load(spec: str, overrides=()):
    """The cascade config of ``spec`` with ``overrides`` applied, validated (:func:`mtcnn_jax.recipe.validate`).

    A ConfigDict: :func:`mtcnn_jax.recipe.train_cascade` writes it as the run's
    ``config.json`` and turns it into typed settings itself.
    """
    import ml_collections  # noqa: PLC0415

    from mtcnn_jax import config_utils, recipe  # noqa: PLC0415
    from mtcnn_jax.errors import UserError  # noqa: PLC0415

    config = config_utils.load_config(spec)
    if not isinstance(config, ml_collections.ConfigDict):
        raise UserError(f"{spec}: get_config must return an ml_collections.ConfigDict")
    for key, val in overrides:
        config_utils.apply_override(config, key, val)
    recipe.validate(config)
    return config


def run(args: argparse.Namespace) -> int:
    from mtcnn_jax import recipe, runs  # noqa: PLC0415
    from mtcnn_jax.errors import UserError  # noqa: PLC0415

    if args.stop_after is not None and args.stop_after not in recipe.STEPS:
        raise UserError(f"--stop-after: unknown step {args.stop_after!r} (one of {', '.join(recipe.STEPS)})")
    config = load(args.config, args.config_overrides)
    try:
        summary = recipe.train_cascade(config, args.workdir, progress=not args.no_progress, overwrite=args.overwrite,
                                       stop_after=args.stop_after)
    except BrokenPipeError:
        raise
    except OSError as err:  # the workdir went away, the disk is full, ...
        raise UserError(runs.os_error_line(err)) from None
    if args.stop_after and args.stop_after != recipe.STEPS[-1]:
        print(f"stopped after {args.stop_after}: {args.workdir}/{args.stop_after} (rerun without --stop-after to go on)")
        return 0
    for line in recipe.summary_lines(summary):
        print(line)
    print(f"cascade: {args.workdir}/params.msgpack")
    return 0
