"""What keeps a long training run safe: its work folder, interrupts that stop it, checkpoints it can trust.

Used by :func:`mtcnn_jax.train.train_and_evaluate`, :func:`mtcnn_jax.sweep.run_sweep`
and :func:`mtcnn_jax.recipe.train_cascade` (``docs/reliability.md``):

* :func:`check_workdir` — the output policy for a work folder: one that can be
  written, outside the training data unless ``overwrite``; one line otherwise.
* :func:`interruptible` / :func:`check_interrupt` / :func:`deferred_interrupts` —
  Ctrl-C and SIGTERM stop the long loops even when Python would lose the
  KeyboardInterrupt inside a garbage-collector callback, and never in the middle
  of writing a checkpoint.
* :func:`write_checkpoint_manifest` / :func:`checkpoint_damage` /
  :func:`open_checkpoints` — each finished Orbax checkpoint records its files'
  sizes and SHA-256; on resume a damaged one is moved aside (one line saying so)
  and the newest sound one restored.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Iterable, Iterator, Optional

from mtcnn_jax.files import sha256_file

#: Written into each checkpoint folder once Orbax has finished it: its files' sizes and SHA-256.
CHECKPOINT_MANIFEST = "mtcnn_jax_files.json"


# ----------------------------------------------------------------------------- workdir


def check_workdir(workdir, inputs: Iterable = (), overwrite: bool = False, option: str = "--workdir") -> Path:
    """The output policy for a training workdir; returns it as an absolute path, created.

    Refused with a one-line :class:`~mtcnn_jax.errors.UserError` naming ``option``:
    a path that exists and is not a folder; a folder that cannot be created or
    written into; and, unless ``overwrite``, a folder that is one of ``inputs``
    (the training data folders), lies inside one or holds one
    (:class:`mtcnn_jax.files.OutputPolicy`).
    """
    from mtcnn_jax.errors import UserError  # noqa: PLC0415
    from mtcnn_jax.files import OutputPolicy  # noqa: PLC0415

    path = os.fspath(workdir)
    OutputPolicy([os.fspath(p) for p in inputs if p], overwrite).check_folder(option, path)
    try:  # os.access can say yes where writing fails (an immutable folder, some network file systems)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise UserError(f"{option}: cannot write into {path} ({err.strerror or err})") from None
    return Path(path).resolve()


def data_folders(data) -> list:
    """The input folders of :class:`mtcnn_jax.settings.DataSettings` ``data``: its root, WIDER and landmark folders."""
    root = Path(data.root)
    return [root, root / data.wider, root / data.landmarks]


def os_error_line(err: OSError) -> str:
    """An ``OSError`` as one line: ``"<path>: <reason>"``."""
    reason = err.strerror or (str(err).strip().splitlines() or [type(err).__name__])[0]
    return f"{err.filename}: {reason}" if err.filename is not None else reason


# ----------------------------------------------------------------------------- interrupts

_pending_signals: list = []
_guard_depth = [0]
_deferring = [0]


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Within it, a SIGINT or SIGTERM that has a Python handler is also remembered; see :func:`check_interrupt`.

    Python raises KeyboardInterrupt (and ``mtcnn-jax`` raises it for SIGTERM)
    wherever the main thread is when the signal comes; when that is a garbage
    collector callback (JAX registers one) the exception is printed as
    "ignored" and lost, and the run would go on. The long loops (training
    steps, sweep runs, recipe steps) call :func:`check_interrupt` at every
    iteration, so such a signal still stops them. Main thread only (elsewhere
    it does nothing); re-entrant. Inside :func:`deferred_interrupts` a signal is
    only remembered.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    installed = {}
    if _guard_depth[0] == 0:
        del _pending_signals[:]
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(signum)
            if callable(previous):
                def remember(num, frame, previous=previous):
                    _pending_signals.append(num)
                    if not _deferring[0] and not _in_gc_callback(frame):  # (there it would be lost, with a traceback)
                        previous(num, frame)

                installed[signum] = previous
                signal.signal(signum, remember)
    _guard_depth[0] += 1
    try:
        yield
    finally:
        _guard_depth[0] -= 1
        for signum, previous in installed.items():
            signal.signal(signum, previous)
        if _guard_depth[0] == 0:
            del _pending_signals[:]


def _in_gc_callback(frame, depth: int = 20) -> bool:
    """Whether ``frame`` (or one of its callers, ``depth`` up) runs a garbage-collector callback."""
    import gc  # noqa: PLC0415

    codes = {getattr(cb, "__code__", None) for cb in gc.callbacks}
    codes.discard(None)
    while frame is not None and depth > 0:
        if frame.f_code in codes:
            return True
        frame, depth = frame.f_back, depth - 1
    return False


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Within :func:`interruptible`, a signal that comes inside this block takes effect when it ends
    (KeyboardInterrupt then): for writing a checkpoint, which Orbax finishes in threads of its own that an
    interrupt would leave half done (and complaining at exit)."""
    _deferring[0] += 1
    try:
        yield
    finally:
        _deferring[0] -= 1
    if not _deferring[0]:
        check_interrupt()


def check_interrupt() -> None:
    """Raise KeyboardInterrupt if a signal came within :func:`interruptible` (whether or not it was raised then)."""
    if _pending_signals:
        del _pending_signals[:]
        raise KeyboardInterrupt


# ----------------------------------------------------------------------------- checkpoints


def write_checkpoint_manifest(step_dir) -> None:
    """Record the size and SHA-256 of every file of the finished checkpoint folder ``step_dir``."""
    from mtcnn_jax import files  # noqa: PLC0415

    step_dir = Path(step_dir)
    listing = {p.relative_to(step_dir).as_posix(): [p.stat().st_size, sha256_file(p)]
               for p in sorted(step_dir.rglob("*")) if p.is_file() and p.name != CHECKPOINT_MANIFEST}
    files.write_json(step_dir / CHECKPOINT_MANIFEST, {"files": listing}, indent=None, sort_keys=True)


def checkpoint_damage(step_dir) -> Optional[str]:
    """Why the checkpoint folder ``step_dir`` is not as it was written, from its manifest; None when it is,
    or when it has no manifest (then only restoring it tells)."""
    step_dir = Path(step_dir)
    try:
        listing = json.loads((step_dir / CHECKPOINT_MANIFEST).read_text())["files"]
        items = [(str(name), int(size), str(digest)) for name, (size, digest) in listing.items()]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"its list of files {CHECKPOINT_MANIFEST} is damaged"
    for name, size, digest in items:
        path = step_dir / name
        try:
            actual = path.stat().st_size
            if actual != size:
                return f"{name} has {actual} bytes, {size} were written"
            if sha256_file(path) != digest:
                return f"{name} differs from what was written"
        except OSError:
            return f"{name} is missing"
    return None


def _ignore_closed_loop_callbacks() -> None:
    """Silence the "Event loop is closed" errors that Orbax's reads still in flight report (through
    ``sys.unraisablehook``, long after the fact) once a restore has failed; other reports pass on."""
    previous = sys.unraisablehook
    if getattr(previous, "_mtcnn_jax_filter", False):
        return

    def hook(unraisable):
        err = unraisable.exc_value
        if isinstance(err, RuntimeError) and str(err) == "Event loop is closed":
            return
        previous(unraisable)

    hook._mtcnn_jax_filter = True
    sys.unraisablehook = hook


def _move_aside(directory: Path, step: int) -> Path:
    n = 1
    while (directory / f"{step}.corrupt-{n}").exists():
        n += 1
    target = directory / f"{step}.corrupt-{n}"
    os.rename(directory / str(step), target)
    return target


@contextlib.contextmanager
def _quiet_orbax() -> Iterator[None]:
    """Orbax logs its own ERROR lines (through absl) about a checkpoint it cannot read; the caller reports
    those in one line of its own."""
    import logging  # noqa: PLC0415

    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _step_dirs(directory: Path) -> list:
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit() and p.is_dir())


def open_checkpoints(directory, state, keep: int, main: bool = True):
    """The workdir's checkpoints: ``(manager, state, step)``, ``state`` restored from the newest checkpoint
    that can be restored (``step`` 0 and ``state`` as given when there is none).

    A checkpoint is damaged when its files differ from its manifest
    (:func:`checkpoint_damage`, checked before Orbax opens the folder), or,
    lacking one, when Orbax cannot restore it. Damaged ones are renamed
    ``<step>.corrupt-<n>`` (by the first process only; Orbax does not see them
    then) and one line on stderr names them, why, and the step training resumes
    from. A checkpoint whose files are as written but that does not restore into
    ``state`` (a config with other shapes or another optimizer) is a one-line
    :class:`~mtcnn_jax.errors.UserError`. ``keep``: how many checkpoints Orbax
    keeps. Orbax's temporary folders of a save cut short by a kill are removed.
    """
    import orbax.checkpoint as ocp  # noqa: PLC0415

    from mtcnn_jax.errors import UserError  # noqa: PLC0415

    directory = Path(directory)
    bad, skip = [], set()
    for step in reversed(_step_dirs(directory)) if directory.is_dir() else ():
        why = checkpoint_damage(directory / str(step))
        if why is not None:
            bad.append((step, why, _move_aside(directory, step).name if main else None))
            skip.add(step)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False,
                                           cleanup_tmp_directories=main)
    with _quiet_orbax():
        manager = ocp.CheckpointManager(directory, options=options)
    restored, start = state, 0
    _ignore_closed_loop_callbacks()
    for step in sorted(set(manager.all_steps()) - skip, reverse=True):
        step_dir = directory / str(step)
        verified = (step_dir / CHECKPOINT_MANIFEST).is_file()
        try:
            with _quiet_orbax(), deferred_interrupts():  # Orbax reads in threads of its own: let them finish
                restored, start = manager.restore(step, args=ocp.args.StandardRestore(state)), step
            break
        except Exception as err:  # noqa: BLE001 (Orbax and TensorStore raise many kinds)
            line = (str(err).strip().splitlines() or [type(err).__name__])[0]
            line = line if len(line) <= 200 else line[:197] + "..."
            if verified:
                raise UserError(f"{step_dir}: cannot restore this checkpoint into the config's state ({line}): "
                                "train with the config it was made with, or use another --workdir") from None
            bad.append((step, line, _move_aside(directory, step).name if main else None))
    if bad:
        manager.reload()
        if main:
            what = "; ".join(f"checkpoint {step} ({why}): moved to {name}" for step, why, name in bad)
            then = f"resuming from step {start}" if start else "no checkpoint left: starting from step 0"
            print(f"mtcnn-jax: {directory}: cannot restore {what}; {then}", file=sys.stderr, flush=True)
    return manager, restored, start


