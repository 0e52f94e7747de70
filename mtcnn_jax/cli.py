"""``mtcnn-jax`` command line: one sub-command per module in :mod:`mtcnn_jax.commands`.

Each command module defines ``register(subparsers)``, which adds its parser and
sets ``func`` to a callable taking the parsed args and returning an exit code.
Errors the user can fix are raised as :class:`mtcnn_jax.errors.UserError` and
printed as one line, ``mtcnn-jax: <message>``, with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading

from mtcnn_jax.errors import UserError

#: Sub-command modules, in the order `--help` lists them.
COMMANDS = ("detect", "train", "train_cascade", "evaluate", "report", "sweep")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtcnn-jax", description="MTCNN face detection, alignment and training in JAX."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"mtcnn_jax.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"mtcnn_jax.commands.{name}":
                continue  # command not available in this version
            raise
        module.register(sub)
    return parser


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM stops a command as Ctrl-C does: what is finished is kept


def main(argv=None) -> int:
    """Run the command line; returns the exit code.

    0 success; 1 some inputs could not be used (each reported in one line); 2 bad
    options or an input the command cannot start from (one line); 130 interrupted
    (Ctrl-C or SIGTERM; finished results are kept); 141 the reader of stdout went
    away (``mtcnn-jax detect ... | head``).
    """
    args = build_parser().parse_args(argv)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"mtcnn-jax: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mtcnn-jax: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Nothing more can be printed; point stdout at /dev/null so that Python's
        # final flush does not raise again.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
