"""The package as users install it: extras, the base install without the training stack,
the wheel (configs by name, weights, licences), ``--version``, ``python -m``, plain
``--help``, and config files that cannot be loaded (one line, never a traceback).

Nothing here downloads: the wheel is built with ``--no-build-isolation --no-index``
from this venv's setuptools (the dev extra) and installed ``--no-deps``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import mtcnn_jax
from mtcnn_jax import cli, config_utils
from conftest import write_blocker
from mtcnn_jax.errors import UserError

REPO = Path(__file__).resolve().parents[1]
ASTRONAUT = REPO / "mtcnn_jax" / "assets" / "astronaut.jpg"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
#: What only the extras bring (train, tfds-sources, plots); the base install (detect, evaluate) runs without them.
NOT_IN_BASE = ("optax", "orbax", "tensorflow_datasets", "ml_collections", "tensorboardX", "grain", "tensorflow",
               "matplotlib")
EXTRA_LINE = "training needs the train extra: pip install 'mtcnn-jax[train]'"


def _env(**extra: str) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", MTCNN_JAX_CACHE_DIR="off", **extra)
    env.pop("XLA_FLAGS", None)
    return env


def _run(args, cwd, env, timeout=180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


# ----------------------------------------------------------------------------- metadata


def _requirement_names(reqs) -> set:
    return {re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}


def test_python_and_dependencies_as_declared():
    project = PYPROJECT["project"]
    assert project["requires-python"] == ">=3.11"  # JAX >= 0.7 publishes for Python >= 3.11 only
    base = _requirement_names(project["dependencies"])
    assert {"jax", "flax", "numpy", "opencv-python-headless", "pillow", "tqdm"} <= base
    training = {"optax", "orbax-checkpoint", "tensorflow-datasets", "ml-collections", "tensorboardx", "tensorflow"}
    assert not base & training, "the base install detects and aligns; training packages go in [train]"
    extras = project["optional-dependencies"]
    assert {"orbax-checkpoint", "optax", "tensorflow-datasets", "ml-collections", "tensorboardx"} <= \
        _requirement_names(extras["train"])
    assert extras["cuda12"] == ["jax[cuda12]>=0.7"] and extras["cuda13"][0].startswith("jax[cuda13]")
    assert "mtcnn-jax[train,plots]" in extras["dev"] and "mypy" in _requirement_names(extras["dev"])
    assert _requirement_names(extras["plots"]) == {"matplotlib"}
    assert "mtcnn-jax[train]" in extras["tfds-sources"] and "tensorflow" in extras["tfds-sources"]


def test_every_subpackage_is_in_the_wheel_list():
    """``[tool.setuptools] packages`` is an explicit list (configs/ is mapped in): no subpackage may be missed."""
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "mtcnn_jax").rglob("__init__.py")}
    assert found <= listed, f"add to pyproject.toml [tool.setuptools] packages: {sorted(found - listed)}"
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"mtcnn_jax.configs": "configs"}


def test_version_has_one_source(capsys):
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "mtcnn_jax.__version__"}
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"mtcnn-jax {mtcnn_jax.__version__}\n"
    try:
        assert importlib.metadata.version("mtcnn-jax") == mtcnn_jax.__version__
    except importlib.metadata.PackageNotFoundError:
        pass  # running from a checkout that is not installed


def test_python_m_runs_the_cli():
    proc = _run(["-m", "mtcnn_jax", "--version"], REPO, _env())
    assert proc.returncode == 0 and proc.stdout == f"mtcnn-jax {mtcnn_jax.__version__}\n", proc.stderr
    proc = _run(["-m", "mtcnn_jax", "train", "--help"], REPO, _env())
    assert proc.returncode == 0 and proc.stdout.startswith("usage: mtcnn-jax train"), proc.stderr


def test_licence_files_exist():
    assert "Apache License" in (REPO / "LICENSE").read_text() and "Version 2.0" in (REPO / "LICENSE").read_text()
    notice = (REPO / "mtcnn_jax" / "weights" / "NOTICE").read_text()
    for needle in ("kpzhang93/MTCNN_face_detection_alignment", "Copyright (c) 2016 Kaipeng Zhang",
                   "mtcnn 1.0.0", "Copyright (c) 2019-2024 Iván de Paz Centeno", "What is not known"):
        assert needle in notice
    assert "mtcnn_jax/weights/NOTICE" in (REPO / "NOTICE").read_text()
    assert (REPO / "mtcnn_jax" / "py.typed").is_file()


# ----------------------------------------------------------------------------- --help


def _parsers(parser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_help_is_plain_text():
    seen = 0
    for parser in _parsers(cli.build_parser()):
        text = parser.format_help()
        assert "``" not in text, parser.prog
        assert not re.search(r":[a-z]+:`", text), parser.prog
        seen += 1
    assert seen >= 10  # mtcnn-jax, its six commands, evaluate's three protocols


def test_plain_renders_rest():
    assert cli.plain("``--json OUT`` writes::\n\n    {}\n") == "--json OUT writes:\n\n    {}\n"
    assert cli.plain("see :mod:`mtcnn_jax.evaluation.fddb` and :class:`~mtcnn_jax.errors.UserError`") == \
        "see mtcnn_jax.evaluation.fddb and UserError"
    assert cli.plain(":func:`load <mtcnn_jax.images.load_image>`") == "load"
    assert cli.plain("ratio 3 : 1 : 1 : 2, x::y") == "ratio 3 : 1 : 1 : 2, x::y"
    assert cli.plain(None) is None


# ----------------------------------------------------------------------------- the base install

@pytest.fixture(scope="module")
def without_training(tmp_path_factory):
    """An environment in which optax, orbax, TFDS, ml-collections, tensorboardX, TensorFlow and matplotlib
    cannot be imported (as after ``pip install mtcnn-jax``, but for optax and orbax, which Flax requires)."""
    folder = write_blocker(tmp_path_factory.mktemp("blocker"), NOT_IN_BASE)
    return _env(PYTHONPATH=os.pathsep.join([str(folder), str(REPO)]))


def test_base_install_imports_and_builds_the_cli_without_training_packages(without_training, tmp_path):
    code = ("import sys, mtcnn_jax; from mtcnn_jax import cli, config_utils; cli.build_parser(); "
            "import optax\n")
    proc = _run(["-c", code], tmp_path, without_training)
    assert "hidden by the test" in proc.stderr, "the blocker is not active: " + proc.stderr[-500:]
    code = ("import sys, mtcnn_jax; from mtcnn_jax import cli; cli.build_parser(); "
            "print(mtcnn_jax.__version__, mtcnn_jax.MTCNN.__name__, mtcnn_jax.align.__name__)")
    proc = _run(["-c", code], tmp_path, without_training)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == [mtcnn_jax.__version__, "MTCNN", "align"]


def test_base_install_detects_and_evaluates_without_training_packages(without_training, tmp_path):
    out = tmp_path / "p.json"
    proc = _run(["-m", "mtcnn_jax", "detect", str(ASTRONAUT), "--json", str(out)], tmp_path, without_training)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[-1] == "1 image, 1 face, 0 errors"
    (x1, y1, x2, y2) = json.loads(out.read_text())[0]["faces"][0]["box"]
    gt = tmp_path / "gt.txt"
    gt.write_text(f"astronaut.jpg\n1\n{x1:.0f} {y1:.0f} {x2 - x1:.0f} {y2 - y1:.0f} 0 0 0 0 0 0\n")
    proc = _run(["-m", "mtcnn_jax", "evaluate", "wider", "--gt", str(gt), "--images", str(ASTRONAUT.parent),
                 "--predictions", str(out), "--out", str(tmp_path / "eval")], tmp_path, without_training)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "AP all: 1.0000" in proc.stdout


@pytest.mark.parametrize("command", [
    ["train", "--config", "pnet:runlocal", "--workdir", "w"],
    ["train-cascade", "--config", "cascade:tiny", "--workdir", "w"],
    ["sweep", "--config", "sweeps/ohem:runlocal", "--workdir", "w"],
])
def test_training_without_the_extra_is_one_line(without_training, tmp_path, command):
    proc = _run(["-m", "mtcnn_jax", *command], tmp_path, without_training)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"mtcnn-jax: {EXTRA_LINE}") and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "w").exists()


def test_a_training_module_missing_later_names_the_extra(monkeypatch, capsys):
    def run(args):
        raise ModuleNotFoundError("No module named 'optax'", name="optax")

    parser = cli.build_parser()
    args = parser.parse_args(["detect", str(ASTRONAUT)])
    args.func = run
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    monkeypatch.setattr(parser, "parse_args", lambda argv=None: args)
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert err == "mtcnn-jax: detect needs the train extra: pip install 'mtcnn-jax[train]' (missing: optax)\n"


# ----------------------------------------------------------------------------- configs by name


def test_configs_by_name_in_the_checkout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert config_utils.config_dir() == REPO / "configs"
    assert config_utils.config_names() == ["cascade", "onet", "pnet", "rnet", "sweeps/alpha", "sweeps/ohem"]
    assert config_utils.get("pnet:runlocal") == config_utils.get("configs/pnet.py:runlocal")
    assert config_utils.get("onet").stage == "onet"
    from mtcnn_jax import sweep  # noqa: PLC0415
    from mtcnn_jax.commands import train_cascade  # noqa: PLC0415

    assert [p.name for p in sweep.load_sweep("sweeps/ohem:runlocal")] == \
        [p.name for p in sweep.load_sweep("configs/sweeps/ohem.py:runlocal")]
    assert train_cascade.load("cascade:tiny").pnet.total_steps == 400
    with pytest.raises(UserError, match=r"config file not found: pnett \(shipped configs: cascade, onet, pnet"):
        config_utils.load_config("pnett:runlocal")
    with pytest.raises(UserError, match="config file not found"):
        config_utils.load_config("../configs/pnet")
    (tmp_path / "pnet").write_text("def get_config(arg=None):\n    return 'mine'\n")
    assert config_utils.load_config("pnet") == "mine"  # a file that exists is that file


# ----------------------------------------------------------------------------- the wheel


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory):
    """The project built as a wheel (offline) and installed ``--no-deps`` into a folder of its own."""
    setuptools = pytest.importorskip("setuptools", reason="the dev extra brings setuptools>=77 (offline wheel build)")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} < 77: pip install -e '.[dev]'")
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "NOTICE"):
        shutil.copy2(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "mtcnn_jax", src / "mtcnn_jax", ignore=ignore)
    shutil.copytree(REPO / "configs", src / "configs", ignore=ignore)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(root / "dist"),
                            str(src)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    for problem in ("did not match any files", "would be ignored", "absent from the `packages`"):
        assert problem not in build.stderr, build.stderr[-3000:]  # a licence file or a package left out
    (wheel,) = (root / "dist").glob("mtcnn_jax-*.whl")
    site = root / "site"
    install = subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    return wheel, site


def test_wheel_contents(wheel_site):
    wheel, _ = wheel_site
    names = set(zipfile.ZipFile(wheel).namelist())
    dist = f"mtcnn_jax-{mtcnn_jax.__version__}.dist-info"
    for name in ("mtcnn_jax/py.typed", "mtcnn_jax/weights/mtcnn_authors.msgpack", "mtcnn_jax/weights/NOTICE",
                 "mtcnn_jax/assets/astronaut.jpg", "mtcnn_jax/__main__.py", "mtcnn_jax/configs/paths.py",
                 "mtcnn_jax/configs/pnet.py", "mtcnn_jax/configs/cascade.py", "mtcnn_jax/configs/sweeps/ohem.py",
                 f"{dist}/licenses/LICENSE", f"{dist}/licenses/NOTICE", f"{dist}/licenses/mtcnn_jax/weights/NOTICE"):
        assert name in names, name
    assert not any(n.startswith(("configs/", "tests/")) for n in names)
    meta = zipfile.ZipFile(wheel).read(f"{dist}/METADATA").decode()
    assert "Requires-Python: >=3.11" in meta and "License-Expression: Apache-2.0" in meta
    base = [line for line in meta.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert not any(m in line for line in base for m in ("optax", "orbax", "tensorflow", "ml-collections", "tensorboard"))
    assert "mtcnn-jax = mtcnn_jax.cli:main" in zipfile.ZipFile(wheel).read(f"{dist}/entry_points.txt").decode()


def test_wheel_finds_configs_by_name_outside_the_checkout(wheel_site, tmp_path):
    _, site = wheel_site
    env = _env(PYTHONPATH=str(site), MTCNN_JAX_DATA=str(tmp_path / "data"))
    code = (
        "import mtcnn_jax\n"
        "from mtcnn_jax import config_utils, sweep\n"
        "from mtcnn_jax.commands import train_cascade\n"
        "print(mtcnn_jax.__file__)\n"
        "print(config_utils.config_dir())\n"
        "print(config_utils.get('pnet:runlocal').data.root)\n"
        "print(config_utils.get('configs/onet.py:runlocal').stage)\n"
        "print(len(sweep.load_sweep('sweeps/ohem:runlocal')), len(sweep.load_sweep('configs/sweeps/alpha.py')))\n"
        "print(train_cascade.load('cascade:tiny').data_root)\n"
    )
    proc = _run(["-c", code], tmp_path, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == str(site / "mtcnn_jax" / "__init__.py")  # the installed copy, not the checkout
    assert lines[1] == str(site / "mtcnn_jax" / "configs")
    assert lines[2:] == [str(tmp_path / "data"), "onet", "20 30", str(tmp_path / "data")]  # 4 and 6 points x 5 seeds
    # the CLI from the wheel: the config loads, the overrides apply, validation names the bad key
    for command in (["train", "--config", "pnet:runlocal"], ["train", "--config", "configs/pnet.py:runlocal"],
                    ["train-cascade", "--config", "cascade:tiny"], ["sweep", "--config", "sweeps/ohem:runlocal"]):
        proc = _run(["-m", "mtcnn_jax", *command, "--workdir", "w", "--config.total_stepz=2"], tmp_path, env)
        assert proc.returncode == 2 and "unknown config key 'total_stepz'" in proc.stderr, (command, proc.stderr)
        assert proc.stderr.count("\n") == 1 and not (tmp_path / "w").exists()
    proc = _run(["-m", "mtcnn_jax", "--version"], tmp_path, env)
    assert proc.stdout == f"mtcnn-jax {mtcnn_jax.__version__}\n"


def test_wheel_detects_with_its_own_weights(wheel_site, tmp_path):
    _, site = wheel_site
    photo = site / "mtcnn_jax" / "assets" / "astronaut.jpg"
    proc = _run(["-m", "mtcnn_jax", "detect", str(photo)], tmp_path, _env(PYTHONPATH=str(site)))
    assert proc.returncode == 0 and proc.stdout.splitlines()[-1] == "1 image, 1 face, 0 errors", proc.stderr[-2000:]


@pytest.mark.slow
def test_wheel_runs_the_readme_training_command_outside_the_checkout(wheel_site, tmp_path, data_dir):
    """``mtcnn-jax train --config configs/pnet.py:runlocal --workdir ...`` from /tmp, 2 steps on a few images."""
    _, site = wheel_site
    env = _env(PYTHONPATH=str(site), MTCNN_JAX_DATA=str(data_dir))
    proc = _run(["-m", "mtcnn_jax", "train", "--config", "configs/pnet.py:runlocal", "--workdir", str(tmp_path / "w"),
                 "--config.total_steps=2", "--config.data.wider_images=10", "--config.data.landmark_faces=40",
                 "--config.eval_every=2", "--config.checkpoint_every=2", "--config.log_every=1", "--no-progress"],
                tmp_path, env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "final held-out:" in proc.stdout
    assert json.loads((tmp_path / "w" / "config.json").read_text())["data"]["root"] == str(data_dir)


# ----------------------------------------------------------------------------- config files that cannot be loaded

GOOD = "from mtcnn_jax import config_utils\n\ndef get_config(arg=None):\n    return config_utils.base_config()\n"


@pytest.mark.parametrize("content, needle", [
    (b"def get_config(arg=None)\n    return 1\n", r"bad\.py:1: cannot load the config file: SyntaxError: expected ':'"),
    (b"x = 1\n  y = 2\n", r"bad\.py:2: cannot load the config file: IndentationError: unexpected indent"),
    (GOOD.encode().replace(b"config_utils\n", b"config_utils # \xff\xfe\n", 1),
     r"bad\.py: cannot load the config file: not UTF-8 text \(byte 0xff at offset 37\)"),
    (b"\xff" + GOOD.encode(), r"bad\.py: cannot load the config file: not UTF-8 text \(byte 0xff at offset 0\)"),
    (b"# -*- coding: klingon -*-\nx = 1\n", r"bad\.py: cannot load the config file: SyntaxError: unknown encoding"),
    (GOOD.encode().replace(b"arg=None", b"arg=\x00None"), r"bad\.py: cannot load the config file: it holds null bytes"),
    (b"import no_such_module_here\n", r"bad\.py:1: cannot load the config file: ModuleNotFoundError: No module named"),
    (b"x = 1 / 0\n", r"bad\.py:1: cannot load the config file: ZeroDivisionError: division by zero"),
    (b"import sys\nsys.exit(3)\n", r"bad\.py:2: cannot load the config file: SystemExit: 3"),
    (b"def get_config(arg=None):\n    return {}['stage']\n", r"bad\.py:2: get_config\(None\) failed: KeyError: 'stage'"),
    (b"def get_config(arg=None):\n    raise RuntimeError()\n", r"bad\.py:2: get_config\(None\) failed: RuntimeError$"),
    (b"def get_config(arg=None):\n    raise ValueError()\n", r"bad\.py: ValueError$"),
    (b"def f(n):\n    return f(n + 1)\ndef get_config(arg=None):\n    return f(0)\n",
     r"get_config\(None\) failed: RecursionError"),
    (b"get_config = 3\n", r"bad\.py: no get_config\(arg\) function"),
    (b"", r"bad\.py: no get_config\(arg\) function"),
    (b"def get_config(arg=None):\n    return 3\n", r"bad\.py: get_config must return an ml_collections\.ConfigDict"),
])
def test_a_config_file_that_cannot_be_loaded_is_one_line(tmp_path, content, needle):
    bad = tmp_path / "bad.py"
    bad.write_bytes(content)
    with pytest.raises(UserError) as err:
        config_utils.get(str(bad))
    message = str(err.value)
    assert "\n" not in message and re.search(needle, message), message
    assert str(bad) in message


def test_the_cli_reports_a_broken_config_in_one_line(tmp_path, capsys):
    bad = tmp_path / "broken.py"
    bad.write_text("def get_config(arg=None):\n    c = {}\n    return c.nope\n")
    for command in ("train", "train-cascade", "sweep"):
        rc = cli.main([command, "--config", f"{bad}:runlocal", "--workdir", str(tmp_path / "w")])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
        if command == "sweep":
            assert err == f"mtcnn-jax: {bad}: no sweep(arg) function (a sweep file needs get_config and sweep)\n"
        else:
            assert err == (f"mtcnn-jax: {bad}:3: get_config('runlocal') failed: "
                           "AttributeError: 'dict' object has no attribute 'nope'\n")
    assert not (tmp_path / "w").exists()


def test_a_config_that_loads_a_missing_config_names_it(tmp_path):
    f = tmp_path / "outer.py"
    f.write_text("from mtcnn_jax import config_utils\n\ndef get_config(arg=None):\n"
                 "    return config_utils.load_config('configs/nothere.py')\n")
    with pytest.raises(UserError, match=r"^config file not found: configs/nothere\.py$"):
        config_utils.get(str(f))
