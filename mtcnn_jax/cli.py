"""``mtcnn-jax`` command line: one sub-command per module in :mod:`mtcnn_jax.commands`.

Each command module defines ``register(subparsers)``, which adds its parser and
sets ``func`` to a callable taking the parsed args and returning an exit code.
Errors the user can fix are raised as :class:`mtcnn_jax.errors.UserError` and
printed as one line, ``mtcnn-jax: <message>``, with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

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


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"mtcnn-jax: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mtcnn-jax: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
