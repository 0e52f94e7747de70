"""Shared test settings.

The real data in ``../shared`` (third-party, never committed) is reached through one
setting: the environment variable ``MTCNN_JAX_DATA`` (default: ``<repo>/../shared/data``).
The reference outputs of other detectors are read from its sibling ``reference/``.
Tests that need them skip, saying so, where the folder is absent — except in CI
(``CI`` set to ``true``), where the data is always provided: there a missing folder
is an error, so that no test is silently skipped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Sequence

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: trains networks or runs whole pipelines (seconds to a minute); "
        "`pytest -m 'not slow'` is the quick loop"
    )
DATA_DIR = Path(os.environ.get("MTCNN_JAX_DATA", REPO.parent / "shared" / "data")).resolve()
REFERENCE_DIR = DATA_DIR.parent / "reference"


def _require(path: Path) -> Path:
    if not path.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"shared data not found at {path}, but CI must provide it (MTCNN_JAX_DATA)")
        pytest.skip(
            f"shared data not found at {path}: set MTCNN_JAX_DATA to the folder holding "
            "widerface_val_subset/, mtfl_aflw_test_landmarks/, ... (see README, 'Tests')"
        )
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """``$MTCNN_JAX_DATA``; skips the test where it is absent."""
    return _require(DATA_DIR)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """``$MTCNN_JAX_DATA/../reference``; skips the test where it is absent."""
    return _require(REFERENCE_DIR)


def sigkill_when(cmd: Sequence[str], ready: Callable[[], bool], timeout: float = 120.0, poll: float = 0.02) -> None:
    """Run ``cmd`` from the repo root (CPU, one device) and SIGKILL it as soon as ``ready()`` holds.

    Fails the test if the process ended on its own before that (its stderr tail is
    shown) or was not killed by the signal.
    """
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    proc = subprocess.Popen(list(cmd), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and proc.poll() is None and not ready():
            time.sleep(poll)
        assert proc.poll() is None, "the process ended before it could be killed: " + proc.stderr.read().decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


#: A ``sitecustomize`` that makes the named top-level packages unimportable in a subprocess:
#: how the tests check what runs without an extra (``pip install mtcnn-jax`` without ``[train]``,
#: an ONNX deployment without JAX, a StableHLO one without Flax).
_BLOCKER = '''
"""Test helper: these packages are not installed (any import of them fails)."""
import sys

BLOCKED = set({blocked!r})


class _NotInstalled:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (hidden by the test)", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled)
'''


def write_blocker(folder: Path, blocked) -> Path:
    """Write ``folder/sitecustomize.py`` hiding the packages ``blocked``; put ``folder`` first on PYTHONPATH."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(_BLOCKER.format(blocked=tuple(blocked)))
    return folder


@pytest.fixture(scope="session")
def det():
    """The detector with the authors' weights and the default settings (one per test session)."""
    from mtcnn_jax import MTCNN

    return MTCNN()


@pytest.fixture(scope="session")
def photo():
    """The bundled public-domain portrait, uint8[512, 512, 3] RGB."""
    from mtcnn_jax import load_image

    return load_image(REPO / "mtcnn_jax" / "assets" / "astronaut.jpg")
