"""The notebooks in notebooks/: ready for Colab, committed with their outputs, and running headless.

Quick (no kernel):

* the layout of each notebook: the "Open in Colab" badge, the install cell with its one
  source variable, the accelerator cell, the data cells of 02 and 03 (the same in both);
* the files hold the outputs of a run of ``notebooks/execute.py`` (every code cell executed
  in order, the expected images and texts, no timings, no errors, within a size budget);
* the Colab-only code, run here with ``google.colab`` faked: the install cell stops on the
  placeholder source and builds one pip line (``cuda12`` on a GPU, ``jax[tpu]`` on a TPU);
  the data options point the configs at a Drive folder or at TFDS ``wider_face`` written
  out in the WIDER layout, with or without landmark faces (the sample cutter reads it).

Slow: each notebook executed with nbclient in a fresh IPython kernel of this Python
(``MTCNN_JAX_SMALL=1``, a temporary ``MTCNN_JAX_WORKDIR``) from a copy in memory: the
committed files are never rewritten. A cell that raises fails the test. Notebooks 02 and
03 train on the shared data: they take the ``data_dir`` fixture (skipped with a reason
where the data is absent, an error in CI). ``execute.py --check`` runs 01 and leaves the
file as it was.
"""

import base64
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[dev]' (nbformat, nbclient, ipykernel)")
nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[dev]' (nbformat, nbclient, ipykernel)")
pytest.importorskip("ipykernel", reason="pip install -e '.[dev]' (nbformat, nbclient, ipykernel)")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
KERNEL = "mtcnn-jax-tests"
NAMES = ["01_detect_and_align", "02_train_pnet", "03_ablation_ohem_alpha"]
NEEDS_DATA = {"01_detect_and_align": False, "02_train_pnet": True, "03_ablation_ohem_alpha": True}
#: What each committed notebook shows: PNG images, Markdown tables.
DISPLAYS = {"01_detect_and_align": (2, 0), "02_train_pnet": (2, 0), "03_ablation_ohem_alpha": (2, 1)}
MAX_KB = 400  # per notebook file, outputs included
PLACEHOLDER = "git+https://github.com/<owner>/mtcnn_jax.git"


def _read(name):
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


def _cell(nb, cell_id):
    found = [c for c in nb.cells if c.get("id") == cell_id]
    assert len(found) == 1, f"no single cell with id {cell_id!r}"
    return found[0]


def _outputs(nb, mime):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if mime in o.get("data", {})]


def _text(nb):
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


# ----------------------------------------------------------------------------- layout


def _check_layout(nb, name):
    badge = nb.cells[0]
    assert badge.cell_type == "markdown" and badge.id == "colab-badge"
    assert "https://colab.research.google.com/assets/colab-badge.svg" in badge.source
    link = re.search(r"\(https://colab\.research\.google\.com/github/([^/]+)/mtcnn_jax/blob/main/notebooks/(.+?)\)",
                     badge.source)
    assert link and link.group(2) == f"{name}.ipynb", badge.source
    intro = nb.cells[1]
    assert intro.cell_type == "markdown" and intro.source.startswith("# ")
    assert ("MTCNN_JAX_DATA" in intro.source) == NEEDS_DATA[name]
    install = nb.cells[2]
    assert install.id == "install" and install.cell_type == "code"
    # The one place the source is set; its default names the badge's owner (<owner> until the repository is public).
    assert install.source.count("MTCNN_JAX_SOURCE =") == 1
    owner = link.group(1)
    assert (f'MTCNN_JAX_SOURCE = os.environ.get("MTCNN_JAX_SOURCE", "git+https://github.com/{owner}/mtcnn_jax.git")'
            in install.source)
    assert 'IN_COLAB = "google.colab" in sys.modules' in install.source and "if IN_COLAB:" in install.source
    accelerator = nb.cells[3]
    assert accelerator.id == "accelerator"
    for text in ("jax.devices()", "jax.default_backend()", "MTCNN_JAX_SMALL", 'BACKEND == "cpu"'):
        assert text in accelerator.source
    ids = [c.get("id") for c in nb.cells]
    assert ("data" in ids and "data-helpers" in ids) == NEEDS_DATA[name]
    assert not any("matplotlib" in c.source for c in nb.cells)
    assert not any(c.source.lstrip().startswith(("!", "%")) for c in nb.cells if c.cell_type == "code")  # plain Python


@pytest.mark.parametrize("name", NAMES)
def test_layout(name):
    _check_layout(_read(name), name)


def test_the_data_cells_are_the_same_in_02_and_03():
    a, b = _read("02_train_pnet"), _read("03_ablation_ohem_alpha")
    for cell_id in ("install", "accelerator", "data-md", "data-helpers", "data"):
        assert _cell(a, cell_id).source == _cell(b, cell_id).source, cell_id


# ----------------------------------------------------------------------------- committed outputs


@pytest.mark.parametrize("name", NAMES)
def test_committed_with_outputs(name):
    path = NOTEBOOKS / f"{name}.ipynb"
    nb = _read(name)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), \
        "not executed top to bottom: run python notebooks/execute.py"
    assert not any("execution" in c.metadata for c in code)  # no timings
    assert not any(o.output_type == "error" for c in code for o in c.outputs)
    assert nb.metadata.kernelspec.name == "python3" and "version" not in nb.metadata.get("language_info", {})
    pngs, tables = DISPLAYS[name]
    images = _outputs(nb, "image/png")
    assert len(images) == pngs and len(_outputs(nb, "text/markdown")) == tables
    assert all(base64.b64decode(o.data["image/png"])[:8] == b"\x89PNG\r\n\x1a\n" for o in images)
    text = _text(nb)
    assert "small mode" in text and "default backend: " in text
    assert path.stat().st_size < MAX_KB * 1024, f"{path.stat().st_size / 1024:.0f} KB"


def _execute_module():
    spec = importlib.util.spec_from_file_location("notebooks_execute", NOTEBOOKS / "execute.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_execute_check_finds_missing_outputs():
    execute = _execute_module()
    for name in NAMES:
        assert execute.missing_outputs(_read(name)) == []
    nb = _read("01_detect_and_align")
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    problems = execute.missing_outputs(nb)
    assert problems[-1] == "no cell has an output" and "cell 2 (install) was not executed" in problems


# ----------------------------------------------------------------------------- Colab-only code, google.colab faked


@pytest.fixture
def colab(monkeypatch):
    """A fake ``google.colab`` (``drive.mount`` records its mount point); returns the list of mounts."""
    mounts = []
    module = types.ModuleType("google.colab")
    module.drive = types.SimpleNamespace(mount=mounts.append)
    monkeypatch.setitem(sys.modules, "google.colab", module)
    return mounts


def _pip_line(monkeypatch, name, gpu=False, tpu=False, source=PLACEHOLDER):
    """Run notebook ``name``'s install cell in "Colab"; the pip command it runs (nothing is installed)."""
    import glob
    import shutil

    calls = []

    def run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0 if gpu or cmd[0] != "nvidia-smi" else 9, stdout="", stderr="")

    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(shutil, "which", lambda cmd: "/usr/bin/nvidia-smi" if cmd == "nvidia-smi" and gpu else None)
    monkeypatch.setattr(glob, "glob", lambda pattern: ["/dev/accel0"] if tpu and "accel" in pattern else [])
    monkeypatch.delenv("COLAB_TPU_ADDR", raising=False)
    monkeypatch.setenv("MTCNN_JAX_SOURCE", source)
    namespace = {}
    exec(_cell(_read(name), "install").source, namespace)  # noqa: S102
    assert namespace["IN_COLAB"]
    pip = [c for c in calls if c[1:4] == ["-m", "pip", "install"]]
    assert len(pip) == 1
    return pip[0][5:]


def test_install_cell_stops_on_the_placeholder(colab, monkeypatch):
    monkeypatch.setenv("MTCNN_JAX_SOURCE", PLACEHOLDER)
    with pytest.raises(RuntimeError, match="MTCNN_JAX_SOURCE is still the placeholder"):
        exec(_cell(_read("01_detect_and_align"), "install").source, {})  # noqa: S102


def test_install_cell_builds_one_pip_line(colab, monkeypatch, tmp_path):
    url = "git+https://github.com/someone/mtcnn_jax.git@main"
    assert _pip_line(monkeypatch, "01_detect_and_align", source=url) == [f"mtcnn-jax @ {url}"]
    assert _pip_line(monkeypatch, "01_detect_and_align", gpu=True, source=url) == [f"mtcnn-jax[cuda12] @ {url}"]
    assert _pip_line(monkeypatch, "02_train_pnet", source=url) == [f"mtcnn-jax[train] @ {url}"]
    assert _pip_line(monkeypatch, "03_ablation_ohem_alpha", gpu=True, source=url) == [
        f"mtcnn-jax[train,cuda12] @ {url}"]
    assert _pip_line(monkeypatch, "02_train_pnet", tpu=True, source=url) == [f"mtcnn-jax[train] @ {url}", "jax[tpu]"]
    # A folder holding a checkout: installed from its file URL.
    assert _pip_line(monkeypatch, "02_train_pnet", source=str(tmp_path)) == [
        f"mtcnn-jax[train] @ {tmp_path.resolve().as_uri()}"]


def test_install_cell_does_nothing_outside_colab(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.delenv("MTCNN_JAX_SOURCE", raising=False)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("ran a command outside Colab"))
    namespace = {}
    exec(_cell(_read("02_train_pnet"), "install").source, namespace)  # noqa: S102
    assert namespace["IN_COLAB"] is False and namespace["MTCNN_JAX_SOURCE"].startswith("git+https://github.com/")


def _helpers():
    """The data cells' helpers: the library functions the notebooks import."""
    from mtcnn_jax.data import colab, tfds_sources

    namespace = {"os": os, "IN_COLAB": True}
    exec(_cell(_read("02_train_pnet"), "data-helpers").source, namespace)  # noqa: S102
    assert namespace["colab_data"] is colab.colab_data
    return {"colab_data": colab.colab_data, "data_overrides": colab.data_overrides,
            "write_wider_folder": tfds_sources.write_wider_folder}


def _examples(rng, n):
    """``n`` TFDS ``wider_face``-like examples (NumPy values): noise images, two faces each (one on the edge)."""
    out = []
    for k in range(n):
        h, w = 120, 160
        boxes = np.array([[30, 40, 70, 80], [80, 120, 120, 160]], np.float64)  # ymin, xmin, ymax, xmax in pixels
        out.append({
            "image": rng.integers(0, 256, (h, w, 3), np.uint8),
            "image/filename": f"{k % 3}--Event/{k}_event_{k}.jpg".encode(),
            "faces": {"bbox": (boxes / [h, w, h, w]).astype(np.float32),
                      "blur": np.array([0, 2], np.uint8), "expression": np.array([False, True]),
                      "illumination": np.array([True, False]), "occlusion": np.array([1, 0], np.uint8),
                      "pose": np.array([False, True]), "invalid": np.array([False, False])},
        })
    out[-1]["faces"] = {key: value[:0] for key, value in out[-1]["faces"].items()}  # an image without faces
    return out


def test_write_wider_folder_round_trips(tmp_path):
    from mtcnn_jax.data import tfds_sources
    from mtcnn_jax.data.wider import find_gt, read_wider_gt

    pairs = [tfds_sources.wider_record_from_example(e) for e in _examples(np.random.default_rng(0), 5)]
    assert _helpers()["write_wider_folder"](iter(pairs), tmp_path / "wider") == 5
    records = read_wider_gt(find_gt(tmp_path / "wider"))
    assert [r.path for r in records] == [r.path for r, _ in pairs]
    for back, (record, image) in zip(records, pairs):
        np.testing.assert_array_equal(back.boxes, record.boxes)
        for key in ("invalid", "blur", "expression", "illumination", "occlusion", "pose"):
            np.testing.assert_array_equal(getattr(back, key), getattr(record, key))
        assert (tmp_path / "wider" / "images" / record.path).is_file()
    assert len(records[-1]) == 0


def _cut(overrides, tmp_path):
    """The P-Net sample sets the configs cut with ``overrides`` (one process)."""
    from mtcnn_jax import config_utils
    from mtcnn_jax.data import samples
    from mtcnn_jax.settings import TrainSettings

    config = config_utils.get("configs/pnet.py:runlocal", overrides + [("data.workers", "1")])
    settings = TrainSettings.from_config(config)
    return samples.build(settings.data, 12, settings.seed, progress=False)


def test_colab_data_from_tfds_without_landmarks(colab, monkeypatch, tmp_path):
    from mtcnn_jax.data import tfds_sources

    prepared, splits = [], []
    fake_tfds = types.ModuleType("tensorflow_datasets")
    fake_tfds.builder = lambda name: types.SimpleNamespace(download_and_prepare=lambda: prepared.append(name))
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake_tfds)
    examples = _examples(np.random.default_rng(1), 30)

    def load_wider_face(split="train", data_dir=None):
        splits.append(split)
        return (tfds_sources.wider_record_from_example(e) for e in examples)

    monkeypatch.setattr(tfds_sources, "load_wider_face", load_wider_face)
    monkeypatch.setenv("MTCNN_JAX_DATA", "/nonexistent")  # restored after the test
    local = tmp_path / "content" / "mtcnn_jax_data"
    overrides = _helpers()["colab_data"]("tfds", tmp_path / "drive", local, 30)
    assert prepared == ["wider_face"] and splits == ["train[:30]"] and colab == []
    assert os.environ["MTCNN_JAX_DATA"] == str(local)
    assert dict(overrides) == {
        "data.root": str(local), "data.wider": "wider_face_tfds", "data.landmark_faces": "0", "batch.landmark": "0"}
    monkeypatch.delitem(sys.modules, "google.colab")  # JAX, imported by the cutter, has its own Colab code
    train_set, val_set = _cut(overrides, tmp_path)
    types_ = np.bincount(train_set["type"], minlength=4)
    assert types_[0] > 0 and types_[1] > 0 and types_[3] == 0  # negatives, positives; no landmark windows
    # A second call finds the folder written: nothing is downloaded again.
    _helpers()["colab_data"]("tfds", tmp_path / "drive", local, 30)
    assert prepared == ["wider_face"]


def test_colab_data_from_drive(colab, monkeypatch, tmp_path, data_dir):
    drive = tmp_path / "MyDrive" / "mtcnn_jax_data"
    drive.mkdir(parents=True)
    (drive / "widerface_train_mini").symlink_to(data_dir / "widerface_train_mini")
    monkeypatch.setenv("MTCNN_JAX_DATA", "/nonexistent")
    local = tmp_path / "content" / "mtcnn_jax_data"
    helpers = _helpers()
    # Without landmark faces in the folder: none.
    overrides = helpers["colab_data"]("drive", drive, local, 640)
    assert colab == ["/content/drive"] and os.environ["MTCNN_JAX_DATA"] == str(drive)
    assert dict(overrides)["data.root"] == str(drive) and dict(overrides)["batch.landmark"] == "0"
    # With them (the shared copy): the CUHK list.
    (drive / "mtfl_lfw_train_landmarks").symlink_to(data_dir / "mtfl_lfw_train_landmarks")
    overrides = helpers["colab_data"]("drive", drive, local, 640)
    assert overrides == [("data.root", str(drive)), ("data.wider", "widerface_train_mini"),
                         ("data.landmark_list", "cuhk_trainImageList_lfw.txt")]
    # A Drive folder without the images says what to do.
    with pytest.raises(FileNotFoundError, match="DATA_SOURCE = 'tfds'"):
        helpers["colab_data"]("drive", tmp_path, local, 640)
    with pytest.raises(ValueError, match="'drive' or 'tfds'"):
        helpers["colab_data"]("kaggle", drive, local, 640)
    monkeypatch.delitem(sys.modules, "google.colab")  # JAX, imported by the cutter, has its own Colab code
    small = [("data.wider_images", "4"), ("data.landmark_faces", "10")]
    train_set, _ = _cut(small + overrides, tmp_path)
    assert np.bincount(train_set["type"], minlength=4)[3] > 0  # landmark windows


# ----------------------------------------------------------------------------- executed (slow)


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
    nb = _read(name)  # a copy in memory: the committed file is not rewritten
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name=KERNEL,
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    t0 = time.time()
    client.execute()  # raises CellExecutionError on the first cell that fails
    return nb, time.time() - t0


@pytest.mark.slow
def test_01_detect_and_align(kernel_path, monkeypatch, tmp_path):
    nb, elapsed = _run("01_detect_and_align", kernel_path, monkeypatch, tmp_path)
    _check_layout(nb, "01_detect_and_align")
    text = _text(nb)
    assert "1 face(s)" in text  # the bundled portrait
    assert "(1, 112, 112, 3)" in text
    assert "small mode" in text and "devices: [" in text
    assert len(_outputs(nb, "image/png")) == 2  # the annotated photo and the aligned crop
    assert elapsed < 300, elapsed


@pytest.mark.slow
def test_02_train_pnet(kernel_path, monkeypatch, tmp_path, data_dir):
    nb, elapsed = _run("02_train_pnet", kernel_path, monkeypatch, tmp_path, data_dir)
    _check_layout(nb, "02_train_pnet")
    workdir = tmp_path / "02_train_pnet" / "small"
    val = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in val if r["split"] == "val"]
    assert val[-1]["step"] == 300 and val[-1]["accuracy"] > val[0]["accuracy"]
    assert len(_outputs(nb, "image/png")) == 2  # the sample windows and the curves
    assert elapsed < 300, elapsed  # CPU-bound; generous for a shared machine


@pytest.mark.slow
def test_03_ablation(kernel_path, monkeypatch, tmp_path, data_dir):
    nb, elapsed = _run("03_ablation_ohem_alpha", kernel_path, monkeypatch, tmp_path, data_dir)
    _check_layout(nb, "03_ablation_ohem_alpha")
    workdir = tmp_path / "03_ablation" / "small"
    rows = (workdir / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 * 5 and all(",done," in r for r in rows[1:])  # 4 ratios x 5 seeds, as replicas
    assert rows[0].startswith("run,ohem_ratio,seed,status,")
    assert len(_outputs(nb, "image/png")) == 2  # results.png and curves.png
    assert len(_outputs(nb, "text/markdown")) == 1  # the table
    assert elapsed < 300, elapsed  # CPU-bound; generous for a shared machine


@pytest.mark.slow
def test_execute_check_leaves_the_file_alone():
    path = NOTEBOOKS / "01_detect_and_align.ipynb"
    before = path.read_bytes()
    proc = subprocess.run([sys.executable, str(NOTEBOOKS / "execute.py"), "--check", "01_detect_and_align"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "01_detect_and_align.ipynb: ran in" in proc.stdout
    assert path.read_bytes() == before
