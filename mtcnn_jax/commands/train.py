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

Several GPUs on one machine need nothing: the step is data-parallel over every
local device. Several hosts (or several processes on one machine): start the
same command on every host with ``--distributed`` and a ``--workdir`` all hosts
share. On SLURM, Open MPI or TPU pods, ``--distributed`` alone finds the
coordinator; elsewhere give it on every host::

    mtcnn-jax train --config rnet --workdir /shared/rnet --distributed \
        --coordinator host0:1234 --num-processes 2 --process-id 0     # on host0
    mtcnn-jax train --config rnet --workdir /shared/rnet --distributed \
        --coordinator host0:1234 --num-processes 2 --process-id 1     # on host1

Each process draws its ``1 / num-processes`` of every global batch (each sample
type's count must divide by the process count); process 0 writes the logs;
checkpoints are written collectively. On CPUs the processes talk through JAX's
gloo collectives (set here); ``JAX_NUM_CPU_DEVICES`` gives each several CPU
devices. tests/test_multihost.py trains two such processes and checks they end
with the params of one process training on the same global batches.
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
    p.add_argument("--distributed", action="store_true",
                   help="one of several processes (hosts): call jax.distributed.initialize() first")
    p.add_argument("--coordinator", metavar="HOST:PORT",
                   help="with --distributed: process 0's address (found by itself on SLURM / MPI / TPU pods)")
    p.add_argument("--num-processes", type=int, metavar="N", help="with --distributed: how many processes")
    p.add_argument("--process-id", type=int, metavar="I", help="with --distributed: this process, 0 .. N-1")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true",
                   help="allow a --workdir inside the training data folder (or holding it)")
    p.set_defaults(func=run, config_overrides=[])

    from mtcnn_jax.config_utils import accept_overrides  # noqa: PLC0415

    accept_overrides(p)  # --config.KEY=VALUE, which argparse would reject


def initialize_distributed(coordinator=None, num_processes=None, process_id=None) -> None:
    """``jax.distributed.initialize`` with gloo collectives for CPU devices (None: the cluster's environment)."""
    import jax  # noqa: PLC0415

    from mtcnn_jax.errors import UserError  # noqa: PLC0415

    if num_processes is not None and not (process_id is not None and 0 <= process_id < num_processes):
        raise UserError(f"--process-id must be in 0 .. {num_processes - 1} (got {process_id})")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id)
    except (ValueError, RuntimeError) as err:
        raise UserError(f"jax.distributed.initialize failed: {str(err).splitlines()[0]}") from None


def run(args: argparse.Namespace) -> int:
    import jax  # noqa: PLC0415

    from mtcnn_jax import config_utils, runs, train  # noqa: PLC0415
    from mtcnn_jax.errors import UserError  # noqa: PLC0415
    from mtcnn_jax.settings import TrainSettings  # noqa: PLC0415

    if args.distributed:
        initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    elif (args.coordinator, args.num_processes, args.process_id) != (None, None, None):
        raise UserError("--coordinator, --num-processes and --process-id go with --distributed")
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
