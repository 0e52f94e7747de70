"""``mtcnn-jax train``: train one stage from a config file.

    mtcnn-jax train --config configs/pnet.py:runlocal --workdir DIR [--init pretrained]
                    [--config.KEY=VALUE ...] [--distributed] [--no-progress] [--overwrite]

Overrides use the config's dotted keys (``--config.ohem_ratio=1.0``,
``--config.alpha.box=0.25``); see :mod:`mtcnn_jax.config_utils`. Rerunning on
the same ``--workdir`` resumes from its latest checkpoint (a damaged one is moved
aside as ``<step>.corrupt-<n>`` and the newest readable one is used, saying so).
``--workdir`` must be a folder that can be written, outside the training data
(``config.data.root``) unless ``--overwrite``. Ctrl-C or SIGTERM stops with exit
code 130, keeping every finished checkpoint.

Several hosts: start the same command on every host with ``--distributed``
(it calls ``jax.distributed.initialize()``, which reads the coordinator address,
process count and id from the cluster environment — SLURM, TPU pods, or
``JAX_COORDINATOR_ADDRESS``/``JAX_NUM_PROCESSES``/``JAX_PROCESS_ID``); the
``--workdir`` must be a folder all hosts share.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train P-Net, R-Net or O-Net from a config file",
        description=__doc__.split("\n\n")[0],
        epilog="Config overrides: --config.KEY=VALUE, e.g. --config.ohem_ratio=1.0 --config.alpha.box=0.25",
    )
    p.add_argument("--config", required=True, metavar="FILE[:ARG]",
                   help="config file and variant, e.g. configs/pnet.py:runlocal, or a shipped config by name: "
                        "pnet:runlocal, rnet, onet")
    p.add_argument("--workdir", required=True, help="folder for checkpoints, metrics and TensorBoard events")
    p.add_argument("--init", choices=("scratch", "pretrained"), default="scratch",
                   help="start from fresh params (default) or the authors' released weights")
    p.add_argument("--distributed", action="store_true", help="call jax.distributed.initialize() first")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true",
                   help="allow a --workdir inside the training data folder (or holding it)")
    p.set_defaults(func=run, config_overrides=[])

    from mtcnn_jax.config_utils import accept_overrides  # noqa: PLC0415

    accept_overrides(p)  # --config.KEY=VALUE, which argparse would reject


def run(args: argparse.Namespace) -> int:
    import jax  # noqa: PLC0415

    from mtcnn_jax import config_utils, runs, train  # noqa: PLC0415
    from mtcnn_jax.errors import UserError  # noqa: PLC0415
    from mtcnn_jax.settings import TrainSettings  # noqa: PLC0415

    if args.distributed:
        jax.distributed.initialize()
    settings = TrainSettings.from_config(config_utils.get(args.config, args.config_overrides))
    try:
        _, metrics = train.train_and_evaluate(settings, args.workdir, init=args.init, progress=not args.no_progress,
                                              overwrite=args.overwrite)
    except ValueError as err:
        raise UserError(str(err).splitlines()[0]) from None
    except BrokenPipeError:
        raise
    except OSError as err:  # the workdir went away, the disk is full, ...
        raise UserError(runs.os_error_line(err)) from None
    if metrics and jax.process_index() == 0:
        print("final held-out: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return 0
