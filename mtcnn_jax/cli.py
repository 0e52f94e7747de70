"""``mtcnn-jax`` command line: one sub-command per module in :mod:`mtcnn_jax.commands`.

Each command module defines ``register(subparsers)``, which adds its parser and
sets ``func`` to a callable taking the parsed args and returning an exit code.
Errors the user can fix are raised as :class:`mtcnn_jax.errors.UserError` and
printed as one line, ``mtcnn-jax: <message>``, with exit code 2.

Building the parser imports every command module, so they import at module level
only what detection needs (the base install); the training commands load the
train extra inside ``run``. A command that needs an extra which is not installed
stops with one line naming it (:data:`EXTRAS`, :func:`require_extra`). The help
texts come from the modules' docstrings, rendered as plain text (:func:`plain`)
for every parser in one place (:func:`build_parser`).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import re
import signal
import sys
import threading
from typing import Dict, Optional, Sequence, Tuple

from mtcnn_jax import __version__
from mtcnn_jax.errors import UserError

#: Sub-command modules, in the order `--help` lists them.
COMMANDS = ("detect", "train", "train_cascade", "evaluate", "report", "sweep", "export")

#: The modules each optional extra of pyproject.toml brings (a ModuleNotFoundError for one of
#: them names the extra; the train extra's are checked before a training command starts).
EXTRA_MODULES: Dict[str, Tuple[str, ...]] = {
    "train": ("optax", "orbax.checkpoint", "ml_collections", "tensorflow_datasets", "tensorboardX", "grain"),
    "plots": ("matplotlib",),
    "tfds-sources": ("tensorflow",),
    "onnx": ("jax2onnx", "onnx", "onnxruntime"),
}
#: Command → (extra it needs, what it does): checked before the command runs.
EXTRAS: Dict[str, Tuple[str, str]] = {
    "train": ("train", "training"),
    "train-cascade": ("train", "training"),
    "sweep": ("train", "training"),
}


def require_extra(extra: str, what: str) -> None:
    """Raise a one-line :class:`UserError` naming ``extra`` unless its modules can be imported."""
    missing = []
    for name in EXTRA_MODULES[extra]:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    if missing:
        raise UserError(f"{what} needs the {extra} extra: pip install 'mtcnn-jax[{extra}]' "
                        f"(missing: {', '.join(missing)})")


def _extra_of(err: ModuleNotFoundError) -> Optional[str]:
    """The extra that provides the missing module of ``err``, if one does."""
    top = (err.name or "").split(".")[0]
    return next((extra for extra, mods in EXTRA_MODULES.items() if top in {m.split(".")[0] for m in mods}), None)


# reST that the module docstrings use: ``code``, :role:`target`, :role:`~pkg.mod.name`, ``text::``.
_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?([^`<]*?)(?:\s*<[^`>]*>)?`")
_LITERAL = re.compile(r"``(.+?)``", re.S)


def plain(text: Optional[str]) -> Optional[str]:
    """``text`` (reST from a docstring) as plain text for ``--help``.

    Double backquotes around code are dropped; a role (``:func:`mtcnn_jax.x.f```)
    becomes its target (``mtcnn_jax.x.f``; ``:class:`~a.b.C``` becomes ``C``); a
    paragraph's closing ``::`` (a literal block follows) becomes ``:``. Everything
    else, literal blocks included, is kept.
    """
    if not text:
        return text

    def role(m: re.Match) -> str:
        target = m.group(1).strip()
        return target.rsplit(".", 1)[-1] if m.group(0).split("`", 1)[1].startswith("~") else target

    text = _ROLE.sub(role, text)
    text = _LITERAL.sub(lambda m: m.group(1), text)
    text = re.sub(r"(?<=\S)::(?=\s*$)", ":", text, flags=re.M)  # "... as follows::" → "... as follows:"
    text = re.sub(r"^(\s*)::\s*$", "", text, flags=re.M)  # a bare "::" line
    return text


def _plain_help(parser: argparse.ArgumentParser) -> None:
    """Render ``parser``'s description, epilog and option helps as plain text, and its sub-parsers'."""
    parser.description = plain(parser.description)
    parser.epilog = plain(parser.epilog)
    for action in parser._actions:  # argparse keeps no public list of a parser's actions
        if action.help not in (None, argparse.SUPPRESS):
            action.help = plain(action.help)
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                choice.help = plain(choice.help)
            for sub in {id(p): p for p in action.choices.values()}.values():
                _plain_help(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtcnn-jax", description="MTCNN face detection, alignment and training in JAX."
    )
    parser.add_argument("--version", action="version", version=f"mtcnn-jax {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"mtcnn_jax.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"mtcnn_jax.commands.{name}":
                continue  # command not available in this version
            raise
        module.register(sub)
    _plain_help(parser)
    return parser


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops a command as Ctrl-C does: what is finished is kept


def main(argv: Optional[Sequence[str]] = None) -> int:
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
        if args.command in EXTRAS:
            require_extra(*EXTRAS[args.command])
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"mtcnn-jax: {err}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:
        extra = _extra_of(err)
        if extra is None:
            raise
        print(f"mtcnn-jax: {args.command} needs the {extra} extra: pip install 'mtcnn-jax[{extra}]' "
              f"(missing: {err.name})", file=sys.stderr)
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
