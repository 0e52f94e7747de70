"""The notebooks in notebooks/ run top to bottom, headless, in their small mode.

Each notebook is executed with nbclient in a fresh IPython kernel of this Python
(``MTCNN_JAX_SMALL=1``, a temporary ``MTCNN_JAX_WORKDIR``); a cell that raises fails
the test. Notebooks 02 and 03 train on the shared data: they take the ``data_dir``
fixture (skipped with a reason where the data is absent, an error in CI).
"""

import json
import os
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[dev]' (nbformat, nbclient, ipykernel)")
nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[dev]' (nbformat, nbclient, ipykernel)")
pytest.importorskip("ipykernel", reason="pip install -e '.[dev]' (nbformat, nbclient, ipykernel)")

pytestmark = pytest.mark.slow  # each notebook runs a kernel and trains or detects for real

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
KERNEL = "mtcnn-jax-tests"


@pytest.fixture(scope="module")
def kernel_path(tmp_path_factory):
    """A kernelspec that starts IPython with this interpreter (not whatever "python3" is on PATH)."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "mtcnn_jax tests", "language": "python",
    }))
    return root


def _run(name, kernel_path, monkeypatch, tmp_path, data_dir=None):
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_path))
    monkeypatch.setenv("MTCNN_JAX_SMALL", "1")
    monkeypatch.setenv("MTCNN_JAX_WORKDIR", str(tmp_path))
    if data_dir is not None:
        monkeypatch.setenv("MTCNN_JAX_DATA", str(data_dir))
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name=KERNEL,
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    t0 = time.time()
    client.execute()  # raises CellExecutionError on the first cell that fails
    return nb, time.time() - t0


def _outputs(nb, mime):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if mime in o.get("data", {})]


def _check_layout(nb, needs_data):
    first = nb.cells[0]
    assert first.cell_type == "markdown"
    assert ("MTCNN_JAX_DATA" in first.source) == needs_data
    install = nb.cells[1].source
    assert 'if IN_COLAB:' in install and '"google.colab" in sys.modules' in install and "MTCNN_JAX_SOURCE" in install
    assert "MTCNN_JAX_SMALL" in nb.cells[2].source
    assert not any("matplotlib" in c.source for c in nb.cells)


def test_01_detect_and_align(kernel_path, monkeypatch, tmp_path):
    nb, elapsed = _run("01_detect_and_align", kernel_path, monkeypatch, tmp_path)
    _check_layout(nb, needs_data=False)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "1 face(s)" in text  # the bundled portrait
    assert "(1, 112, 112, 3)" in text
    assert len(_outputs(nb, "image/png")) == 2  # the annotated photo and the aligned crop
    assert elapsed < 300, elapsed


def test_02_train_pnet(kernel_path, monkeypatch, tmp_path, data_dir):
    nb, elapsed = _run("02_train_pnet", kernel_path, monkeypatch, tmp_path, data_dir)
    _check_layout(nb, needs_data=True)
    workdir = tmp_path / "02_train_pnet" / "small"
    val = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in val if r["split"] == "val"]
    assert val[-1]["step"] == 300 and val[-1]["accuracy"] > val[0]["accuracy"]
    assert len(_outputs(nb, "image/png")) == 2  # the sample windows and the curves
    assert elapsed < 300, elapsed  # CPU-bound; generous for a shared machine


def test_03_ablation(kernel_path, monkeypatch, tmp_path, data_dir):
    nb, elapsed = _run("03_ablation_ohem_alpha", kernel_path, monkeypatch, tmp_path, data_dir)
    _check_layout(nb, needs_data=True)
    workdir = tmp_path / "03_ablation" / "small"
    rows = (workdir / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 and all(",done," in r for r in rows[1:])
    assert len(_outputs(nb, "image/png")) == 2  # results.png and curves.png
    assert len(_outputs(nb, "text/markdown")) == 1  # the table
    assert elapsed < 300, elapsed  # CPU-bound; generous for a shared machine
