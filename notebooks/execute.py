"""Execute the notebooks headless in small mode and save them with their outputs.

From the repository root, with the dev extra installed (``make install``)::

    .venv/bin/python notebooks/execute.py            # run all three, write their outputs into the .ipynb files
    .venv/bin/python notebooks/execute.py 02_train_pnet.ipynb   # only some (names or paths)
    .venv/bin/python notebooks/execute.py --check    # run copies, write nothing: exit 1 if a cell raises
                                                     # or a notebook in the repository lacks its outputs

Each notebook runs with nbclient in a fresh IPython kernel of the Python running this
script (not whatever "python3" kernel Jupyter knows), from ``notebooks/``, with
``MTCNN_JAX_SMALL=1`` and ``MTCNN_JAX_WORKDIR`` set to a folder emptied first (so every
run trains anew). The data comes from ``$MTCNN_JAX_DATA`` as in the notebooks.

What is saved, so that a rerun changes only what the cells show: the cells' outputs and
execution counts; no per-cell timings (nbclient's ``record_timing`` is off); the
notebook's own metadata (the kernelspec Colab opens it with) as it was in the file. A
notebook whose run fails is not written. Exit code: 0 when every notebook ran, 1 when a
cell raised (the error is printed) or, with ``--check``, a notebook lacks its outputs.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parent
KERNEL = "mtcnn-jax-execute"
#: Where the notebooks' training runs go (emptied before each notebook runs).
WORKDIR = Path(tempfile.gettempdir()) / "mtcnn_jax_notebooks_execute"


def notebook_paths(names: list[str]) -> list[Path]:
    """The notebooks ``names`` stands for (all of notebooks/*.ipynb when empty)."""
    if not names:
        return sorted(NOTEBOOKS.glob("[0-9]*.ipynb"))
    out = []
    for name in names:
        p = Path(name)
        if not p.is_file():
            p = NOTEBOOKS / p.name if p.suffix == ".ipynb" else NOTEBOOKS / f"{p.name}.ipynb"
        if not p.is_file():
            sys.exit(f"execute.py: no notebook {name} (in {NOTEBOOKS})")
        out.append(p.resolve())
    return out


def kernelspec_dir(root: Path) -> Path:
    """A Jupyter data folder under ``root`` whose kernel ``KERNEL`` starts IPython with this interpreter."""
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "mtcnn_jax (execute.py)", "language": "python",
    }))
    return root


def missing_outputs(nb) -> list[str]:
    """Why the notebook ``nb`` (as read from its file) does not hold a run's outputs; empty when it does."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    problems = [f"cell {i} ({c.get('id', '?')}) was not executed" for i, c in enumerate(nb.cells)
                if c.cell_type == "code" and c.get("execution_count") is None]
    if code and not any(c.get("outputs") for c in code):
        problems.append("no cell has an output")
    return problems


def execute(path: Path, timeout: int, write: bool) -> tuple[bool, str]:
    """Run the notebook at ``path``; write its outputs into it when ``write``. Returns (ok, message)."""
    import nbclient  # noqa: PLC0415 (the dev extra; a missing one is reported by main)
    import nbformat  # noqa: PLC0415

    nb = nbformat.read(path, as_version=4)
    metadata = copy.deepcopy(nb.metadata)
    shutil.rmtree(WORKDIR, ignore_errors=True)
    WORKDIR.mkdir(parents=True)
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name=KERNEL, record_timing=False,
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    t0 = time.time()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        return False, f"a cell raised ({time.time() - t0:.0f} s):\n{err}"
    except nbclient.exceptions.CellTimeoutError as err:
        return False, f"a cell ran longer than {timeout} s: {str(err).splitlines()[0]}"
    elapsed = time.time() - t0
    nb.metadata = metadata  # not the kernel's language_info (its version) nor this script's kernelspec
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    if not write:
        return True, f"ran in {elapsed:.0f} s"
    nbformat.validate(nb)
    tmp = path.with_name(f".{path.name}.partial")
    nbformat.write(nb, tmp)
    tmp.replace(path)
    return True, f"ran in {elapsed:.0f} s, saved with its outputs ({path.stat().st_size / 1024:.0f} KB)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", help="notebook names or paths (default: all in notebooks/)")
    parser.add_argument("--check", action="store_true",
                        help="run copies and write nothing; also fail when a notebook in the repository lacks outputs")
    parser.add_argument("--timeout", type=int, default=900, help="seconds one cell may run (default 900)")
    args = parser.parse_args(argv)
    try:
        import ipykernel  # noqa: F401, PLC0415
        import nbclient  # noqa: F401, PLC0415
        import nbformat  # noqa: PLC0415
    except ImportError as err:
        print(f"execute.py: {err.name} is missing: pip install -e '.[dev]' (nbformat, nbclient, ipykernel)",
              file=sys.stderr)
        return 2
    paths = notebook_paths(args.notebooks)
    os.environ["MTCNN_JAX_SMALL"] = "1"
    os.environ["MTCNN_JAX_WORKDIR"] = str(WORKDIR)
    failed = 0
    with tempfile.TemporaryDirectory(prefix="mtcnn_jax_kernel_") as jupyter:
        os.environ["JUPYTER_PATH"] = str(kernelspec_dir(Path(jupyter)))
        for path in paths:
            if args.check:
                for problem in missing_outputs(nbformat.read(path, as_version=4)):
                    print(f"{path.name}: {problem}: run python notebooks/execute.py and commit the result")
                    failed += 1
            print(f"{path.name}: running ...", flush=True)
            ok, message = execute(path, args.timeout, write=not args.check)
            print(f"{path.name}: {message}", flush=True)
            failed += not ok
    shutil.rmtree(WORKDIR, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
