"""``mtcnn-jax export`` and the exported folder: the manifest, its refusals, the StableHLO round trip.

* the StableHLO folder runs the whole cascade in a process where Flax, Optax, Orbax and
  TFDS cannot be imported (a ``sitecustomize`` blocker), and gives ``MTCNN()``'s detections
  bit for bit on shared WIDER images and the bundled photo, compiling three programs;
* weights other than the authors' travel with the export (digest, detections);
* a folder that is not a complete export of this format version is refused in one line;
* the detector's cascade (``mtcnn_jax.detector``, ``deploy``, ``onnx_runtime``, ``tiles``)
  imports without JAX;
* the command: its output policy and its one-line errors.

The ONNX side is in ``tests/test_onnx.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mtcnn_jax import MTCNN, cli, deploy, export, load_image, pretrained
from mtcnn_jax.data.wider import read_wider_gt
from mtcnn_jax.errors import UserError
from conftest import REPO, write_blocker

ASTRONAUT = REPO / "mtcnn_jax/assets/astronaut.jpg"

#: What the StableHLO cascade runs without: the model code's and the training stack's packages.
NOT_FOR_STABLEHLO = ("flax", "optax", "orbax", "tensorflow_datasets", "tensorflow", "ml_collections")

#: Runs an exported folder on images, in a subprocess: argv = folder, JSON list of image paths, output .npz.
RUNNER = '''
import json, sys
import numpy as np
from mtcnn_jax import load_image
from mtcnn_jax.deploy import load_model

folder, paths, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
det = load_model(folder, compilation_cache=False)
found = det.detect([load_image(p) for p in paths])
arrays = {}
for i, f in enumerate(found):
    arrays[f"boxes{i}"], arrays[f"scores{i}"], arrays[f"landmarks{i}"] = f.boxes, f.scores, f.landmarks
np.savez(out, **arrays)
programs = det.networks.compiled_programs() if hasattr(det.networks, "compiled_programs") else -1
loaded = sorted({m.split(".")[0] for m in sys.modules})
print(json.dumps({"loaded": loaded, "model_code": sorted(m for m in sys.modules if m in
                  ("mtcnn_jax.models", "mtcnn_jax.inference", "mtcnn_jax.pretrained", "mtcnn_jax.export")),
                  "programs": programs}))
'''


def blocked_env(tmp_path: Path, blocked) -> dict:
    """The environment of a subprocess in which ``blocked`` packages cannot be imported."""
    folder = write_blocker(tmp_path / "blocker", blocked)
    env = dict(os.environ, JAX_PLATFORMS="cpu", MTCNN_JAX_CACHE_DIR="off",
               PYTHONPATH=os.pathsep.join([str(folder), str(REPO)]))
    env.pop("XLA_FLAGS", None)
    return env


def run_exported(folder: Path, paths, tmp_path: Path, blocked) -> tuple:
    """:data:`RUNNER` on ``paths`` with ``blocked`` unimportable → (per-image (boxes, scores, landmarks), report)."""
    out = tmp_path / "found.npz"
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(folder), json.dumps([str(p) for p in paths]), str(out)],
                          env=blocked_env(tmp_path, blocked), capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.splitlines()[-1])
    with np.load(out) as data:
        found = [(data[f"boxes{i}"], data[f"scores{i}"], data[f"landmarks{i}"]) for i in range(len(paths))]
    return found, report


def wider_sample(data_dir: Path, every: int) -> list:
    """Every ``every``-th image of the shared WIDER subset (360 images, 61 events, in file order)."""
    root = data_dir / "widerface_val_subset"
    gt = read_wider_gt(root / "wider_face_val_bbx_gt_subset.txt")
    return [root / "images" / rec.path for rec in gt[::every]]


@pytest.fixture(scope="module")
def stablehlo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stablehlo")
    export.export(out, "stablehlo")
    return out


# ----------------------------------------------------------------------------- the round trip


@pytest.mark.slow
def test_stablehlo_cascade_without_flax_gives_mtcnn_detections_bit_for_bit(stablehlo_dir, data_dir, tmp_path):
    paths = wider_sample(data_dir, 18) + [ASTRONAUT]  # 20 WIDER images spread over the events, and the portrait
    found, report = run_exported(stablehlo_dir, paths, tmp_path, NOT_FOR_STABLEHLO)
    assert not set(report["loaded"]) & set(NOT_FOR_STABLEHLO), report["loaded"]
    assert "jax" in report["loaded"] and report["model_code"] == [], report
    assert report["programs"] == 3  # P-Net tiles, R-Net and O-Net batches, as MTCNN()
    det = MTCNN(compilation_cache=False)
    faces = 0
    for path, (boxes, scores, landmarks) in zip(paths, found):
        want = det.detect(load_image(path))
        np.testing.assert_array_equal(boxes, want.boxes, err_msg=str(path))
        np.testing.assert_array_equal(scores, want.scores, err_msg=str(path))
        np.testing.assert_array_equal(landmarks, want.landmarks, err_msg=str(path))
        faces += len(boxes)
    assert faces >= 60  # the sample has faces to compare


def test_the_blocker_hides_flax(tmp_path):
    proc = subprocess.run([sys.executable, "-c", "import flax"], env=blocked_env(tmp_path, NOT_FOR_STABLEHLO),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "hidden by the test" in proc.stderr


def test_the_cascade_imports_without_jax(tmp_path):
    code = ("import sys\n"
            "import mtcnn_jax, mtcnn_jax.detector, mtcnn_jax.deploy, mtcnn_jax.onnx_runtime, mtcnn_jax.tiles\n"
            "from mtcnn_jax.detector import MTCNN, Networks\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'flax')))\n")
    proc = subprocess.run([sys.executable, "-c", code], env=blocked_env(tmp_path, ("jax", "jaxlib", "flax")),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_other_weights_travel_with_the_export(tmp_path):
    rng = np.random.default_rng(0)
    authors = pretrained.load_pretrained()
    params = {s: {layer: {k: v * np.float32(1 + 0.02 * rng.standard_normal()) for k, v in leaves.items()}
                  for layer, leaves in authors[s].items()} for s in authors}
    manifest = export.export(tmp_path / "m", "stablehlo", weights=params)
    assert manifest["weights"] == {"source": "params dict", "sha256": deploy.weights_digest(params)}
    assert manifest["weights"]["sha256"] != deploy.weights_digest(authors)
    photo = load_image(ASTRONAUT)
    got = deploy.load_model(tmp_path / "m", compilation_cache=False).detect(photo)
    want = MTCNN(weights=params, compilation_cache=False).detect(photo)
    assert len(want.boxes) >= 1
    np.testing.assert_array_equal(got.boxes, want.boxes)
    np.testing.assert_array_equal(got.landmarks, want.landmarks)


def test_stablehlo_stages_and_flip_landmarks_are_mtcnns(stablehlo_dir):
    photo = load_image(ASTRONAUT)
    exported = deploy.load_model(stablehlo_dir, flip_landmarks=True, compilation_cache=False)
    det = MTCNN(flip_landmarks=True, compilation_cache=False)
    assert exported.params is None and exported.flip_landmarks
    np.testing.assert_array_equal(exported.detect(photo).landmarks, det.detect(photo).landmarks)
    cand = det.proposals(photo)
    np.testing.assert_array_equal(exported.proposals(photo), cand)
    np.testing.assert_array_equal(exported.refine(photo, cand), det.refine(photo, cand))


def test_manifest_records_what_the_folder_holds(stablehlo_dir):
    m = json.loads((stablehlo_dir / deploy.MANIFEST).read_text())
    assert (m["format"], m["format_version"], m["kind"]) == ("mtcnn-jax-export", 1, "stablehlo")
    assert m["package"] == {"name": "mtcnn-jax", "version": __import__("mtcnn_jax").__version__}
    assert m["weights"]["source"] == "authors"
    assert m["weights"]["sha256"] == deploy.weights_digest(pretrained.load_pretrained())
    assert set(m["platforms"]) == {"cpu", "cuda", "rocm", "tpu"}
    assert m["cascade"] == {"pnet": "packed tiles", "pnet_tile": 128, "pnet_tiles_per_call": 4,
                            "rnet_batch": 32, "onet_batch": 16}
    pnet = m["networks"]["pnet"]
    assert [i.get("shape") for i in pnet["inputs"][1:]] == [["batch", 128, 128, 3], ["batch", 126, 126]]
    assert pnet["outputs"][0]["shape"] == ["batch", 59, 59, 5]
    assert m["networks"]["onet"]["inputs"][1] == {"name": "crops", "shape": ["batch", 48, 48, 3], "dtype": "uint8"}
    for entry in [*m["networks"].values(), m["params"]]:
        assert deploy.file_digest(stablehlo_dir / entry["file"]) == entry["sha256"]
    assert sorted(p.name for p in stablehlo_dir.iterdir()) == sorted(export.output_files("stablehlo"))


def test_weights_digest_is_the_weights_not_the_file(tmp_path):
    params = pretrained.load_pretrained()
    (tmp_path / "p.npz").write_bytes(deploy.params_to_npz(params))
    back = deploy.params_from_npz(tmp_path / "p.npz")
    assert deploy.weights_digest(back) == deploy.weights_digest(params)
    assert set(deploy.flatten_params(back)) == set(deploy.flatten_params(params))
    changed = deploy.unflatten_params(deploy.flatten_params(params))
    changed["onet"]["landmarks"]["bias"] = changed["onet"]["landmarks"]["bias"] + np.float32(1e-6)
    assert deploy.weights_digest(changed) != deploy.weights_digest(params)


# ----------------------------------------------------------------------------- refusals, one line each


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def _refused(folder, match: str) -> None:
    with pytest.raises(UserError, match=match) as err:
        deploy.load_model(folder)
    assert "\n" not in str(err.value)


def test_a_folder_that_is_not_a_complete_export_is_refused_in_one_line(stablehlo_dir, tmp_path):
    _refused(tmp_path / "absent", "no such folder")
    _refused(tmp_path, "no manifest.json: not a folder written by mtcnn-jax export")
    cases = {
        "garbled": (lambda m: "{not json", "not a valid manifest"),
        "list": (lambda m: "[1, 2]", "not an mtcnn-jax export manifest"),
        "format": (lambda m: json.dumps({**m, "format": "other"}), "not an mtcnn-jax export manifest"),
        "version": (lambda m: json.dumps({**m, "format_version": 2}), "export format version 2; this mtcnn-jax reads "
                                                                       "version 1"),
        "no version": (lambda m: json.dumps({k: v for k, v in m.items() if k != "format_version"}),
                       "export format version None"),
        "kind": (lambda m: json.dumps({**m, "kind": "tflite"}), "unknown model kind 'tflite'"),
        "no networks": (lambda m: json.dumps({**m, "networks": {"pnet": m["networks"]["pnet"]}}),
                        "incomplete manifest"),
        "escape": (lambda m: json.dumps({**m, "params": {"file": "../params.npz", "sha256": "0"}}),
                   "not a plain name inside the folder"),
        "no weights": (lambda m: json.dumps({**m, "weights": "authors"}), "incomplete manifest"),
        "batch": (lambda m: json.dumps({**m, "cascade": {**m["cascade"], "rnet_batch": "32"}}),
                  "incomplete manifest"),
        "tile": (lambda m: json.dumps({**m, "cascade": {**m["cascade"], "pnet_tile": 0}}), "incomplete manifest"),
        "binary": (lambda m: b"\xff\xfe", "not a valid manifest"),
    }
    manifest = json.loads((stablehlo_dir / deploy.MANIFEST).read_text())
    for i, (name, (make, match)) in enumerate(cases.items()):
        folder = _copy(stablehlo_dir, tmp_path / f"case{i}")
        text = make(manifest)
        (folder / deploy.MANIFEST).write_bytes(text if isinstance(text, bytes) else text.encode())
        _refused(folder, match)
    folder = _copy(stablehlo_dir, tmp_path / "missing")
    (folder / "rnet.stablehlo").unlink()
    _refused(folder, r"rnet.stablehlo: missing \(the manifest names it\)")
    folder = _copy(stablehlo_dir, tmp_path / "damaged")
    data = bytearray((folder / "onet.stablehlo").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "onet.stablehlo").write_bytes(bytes(data))
    _refused(folder, r"onet.stablehlo: does not match the manifest's SHA-256")
    folder = _copy(stablehlo_dir, tmp_path / "params")  # params replaced, manifest's file digest updated by hand
    other = pretrained.load_pretrained()
    other["pnet"]["conv1"]["bias"] = other["pnet"]["conv1"]["bias"] + np.float32(1)
    (folder / "params.npz").write_bytes(deploy.params_to_npz(other))
    m = json.loads((folder / deploy.MANIFEST).read_text())
    m["params"]["sha256"] = deploy.file_digest(folder / "params.npz")
    (folder / deploy.MANIFEST).write_text(json.dumps(m))
    _refused(folder, "its weights do not match the manifest's weights.sha256")
    folder = _copy(stablehlo_dir, tmp_path / "platform")
    m = json.loads((folder / deploy.MANIFEST).read_text())
    m["platforms"] = ["tpu"]
    (folder / deploy.MANIFEST).write_text(json.dumps(m))
    _refused(folder, "exported for tpu, not for cpu")


def test_exported_networks_hold_their_weights():
    with pytest.raises(UserError, match="exported networks hold their own weights"):
        MTCNN(weights={}, networks=object())  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- the command


def test_export_command_writes_the_folder_and_keeps_what_exists(tmp_path, capsys):
    out = tmp_path / "model"
    assert cli.main(["export", "--format", "stablehlo", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{out}: stablehlo model, pnet.stablehlo, rnet.stablehlo, onet.stablehlo and "
                               "manifest.json (weights authors, sha256 ")
    assert lines[1] == f"run it with: mtcnn-jax detect PATH... --model {out}"
    assert deploy.read_manifest(out)["kind"] == "stablehlo"
    before = (out / "manifest.json").read_bytes()
    assert cli.main(["export", "--format", "stablehlo", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mtcnn-jax: --out: {out} already holds pnet.stablehlo") and err.count("\n") == 1
    assert (out / "manifest.json").read_bytes() == before
    assert cli.main(["export", "--format", "stablehlo", "--out", str(out), "--overwrite"]) == 0
    assert json.loads((out / "manifest.json").read_text()) == json.loads(before)


def test_onnx_export_without_the_extra_is_one_line(tmp_path):
    env = blocked_env(tmp_path, ("jax2onnx",))
    proc = subprocess.run([sys.executable, "-m", "mtcnn_jax", "export", "--format", "onnx", "--out",
                           str(tmp_path / "m")], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == ("mtcnn-jax: ONNX export needs the onnx extra: pip install 'mtcnn-jax[onnx]' "
                           "(missing: jax2onnx)\n")
    assert not (tmp_path / "m" / "manifest.json").exists()


def test_export_command_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["export", "--format", "stablehlo", "--out", str(tmp_path / "a"),
                     "--weights", str(tmp_path / "nope.msgpack")]) == 2
    assert capsys.readouterr().err == f"mtcnn-jax: --weights: {tmp_path / 'nope.msgpack'}: no such file or folder\n"
    (tmp_path / "bad.msgpack").write_bytes(b"not msgpack")
    assert cli.main(["export", "--format", "stablehlo", "--out", str(tmp_path / "b"),
                     "--weights", str(tmp_path / "bad.msgpack")]) == 2
    assert capsys.readouterr().err == f"mtcnn-jax: {tmp_path / 'bad.msgpack'}: not a msgpack weights file\n"
    (tmp_path / "file").write_text("x")
    assert cli.main(["export", "--format", "stablehlo", "--out", str(tmp_path / "file")]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    weights = tmp_path / "run"
    weights.mkdir()
    pretrained.save_params(weights / "params.msgpack", pretrained.load_pretrained())
    assert cli.main(["export", "--format", "stablehlo", "--out", str(weights / "export"),
                     "--weights", str(weights)]) == 2
    assert "lies inside the input folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["export", "--format", "tflite", "--out", str(tmp_path / "c")])
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())
