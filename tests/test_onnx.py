"""The ONNX export (``mtcnn-jax export --format onnx``) and the cascade on ONNX Runtime.

* the ONNX formulations of the networks (``mtcnn_jax.export.onnx_*``) equal the Flax
  modules, P-Net on whole levels of any size (odd and even);
* the three models pass ``onnx.checker`` (full check) with a dynamic batch, P-Net also a
  dynamic height and width, opset 17, uint8 NHWC input; the files name neither this
  checkout nor the machine;
* ONNX Runtime runs them as the modules compute (1e-5), on any batch and level size;
* the cascade on ONNX Runtime, in a process where JAX cannot be imported, finds the faces
  ``MTCNN()`` finds on 40 images spread over the shared WIDER subset and the bundled photo:
  the same number per image, boxes and landmarks within 1e-3 px.

Needs the ``onnx`` extra (jax2onnx, onnx, onnxruntime); skips without it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from mtcnn_jax import MTCNN, deploy, export, inference, load_image, models, networks, pretrained, pyramid, tiles
from conftest import REPO
from test_export import ASTRONAUT, blocked_env, run_exported, wider_sample

ONNX_EXTRA = ("jax2onnx", "onnx", "onnxruntime")


@pytest.fixture(scope="module")
def params():
    return pretrained.load_pretrained()


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    for name in ONNX_EXTRA:
        pytest.importorskip(name, reason="the onnx extra: pip install 'mtcnn-jax[onnx]'")
    out = tmp_path_factory.mktemp("onnx")
    export.export(out, "onnx")
    return out


@pytest.fixture(scope="module")
def sessions(onnx_dir):
    import onnxruntime as ort

    return {s: ort.InferenceSession(str(onnx_dir / f"{s}.onnx"), providers=["CPUExecutionProvider"])
            for s in ("pnet", "rnet", "onet")}


def _whole_level(params, level):
    """P-Net (the module) on one whole level, through networks.pnet_level (padded canvas, valid_hw)."""
    hs, ws = level.shape[:2]
    pad = lambda n: -(-n // 16) * 16  # noqa: E731
    canvas = np.zeros((1, pad(hs), pad(ws), 3), np.uint8)
    canvas[0, :hs, :ws] = level
    prob, reg = networks.pnet_level(params, canvas, np.array([hs, ws], np.int32))
    oh, ow = tiles.pnet_output_size(hs, ws)
    return np.asarray(prob)[:oh, :ow], np.asarray(reg)[:oh, :ow]


def _levels():
    """The portrait's first and last pyramid levels, and noise of odd and even sizes, one at P-Net's window."""
    rng = np.random.default_rng(0)
    photo = load_image(ASTRONAUT)
    h, w = photo.shape[:2]
    scales = pyramid.scales(h, w)
    levels = [pyramid.resize(photo, pyramid.level_size(h, w, s)) for s in (scales[0], scales[-1])]
    sizes = [(12, 12), (13, 31), (129, 34), (40, 333)]
    return levels + [rng.integers(0, 256, size + (3,), dtype=np.uint8) for size in sizes]


def _crop_reference(params, stage, crops):
    module = models.RNet() if stage == "rnet" else models.ONet()
    out = module.apply({"params": params[stage]}, models.normalize(crops))
    return [jax.nn.softmax(out.logits)[:, 1], out.box] + ([out.landmarks] if stage == "onet" else [])


# ----------------------------------------------------------------------------- the formulations (JAX)


@pytest.mark.slow  # compiles each level size
def test_onnx_formulations_equal_the_modules(params):
    rng = np.random.default_rng(1)
    for stage, fn, size in [("rnet", export.onnx_rnet, 24), ("onet", export.onnx_onet, 48)]:
        crops = rng.integers(0, 256, (9, size, size, 3), dtype=np.uint8)
        got = jax.jit(fn)(params[stage], crops)
        for g, w in zip(got, _crop_reference(params, stage, crops)):
            np.testing.assert_allclose(g, w, rtol=0, atol=1e-5)
    for level in _levels():
        prob, box = jax.jit(export.onnx_pnet)(params["pnet"], level[None])
        want_prob, want_box = _whole_level(params["pnet"], level)
        assert prob.shape == (1,) + want_prob.shape and box.shape == (1,) + want_box.shape
        np.testing.assert_allclose(prob[0], want_prob, rtol=0, atol=1e-6)
        np.testing.assert_allclose(box[0], want_box, rtol=0, atol=1e-5)


def test_prelu_as_max_min_is_the_modules_prelu_bit_for_bit():
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(size=(1000, 8)).astype(np.float32), np.float32([[0.0, -0.0, 3e38, -3e38] * 2])])
    alpha = {"alpha": rng.random(8).astype(np.float32)}
    np.testing.assert_array_equal(jax.jit(export._prelu)(alpha, x), jax.jit(inference.prelu)(alpha, x))


# ----------------------------------------------------------------------------- the models


def test_models_pass_the_checker_with_dynamic_shapes(onnx_dir):
    import onnx

    manifest = deploy.read_manifest(onnx_dir)
    assert manifest["kind"] == "onnx" and manifest["opset"] == 17
    assert manifest["cascade"] == {"pnet": "whole levels", "rnet_batch": 32, "onet_batch": 16}
    want = {
        "pnet": (["batch", "height", "width", 3], {"prob": ["batch", "out_height", "out_width"],
                                                    "box": ["batch", "out_height", "out_width", 4]}),
        "rnet": (["batch", 24, 24, 3], {"prob": ["batch"], "box": ["batch", 4]}),
        "onet": (["batch", 48, 48, 3], {"prob": ["batch"], "box": ["batch", 4], "landmarks": ["batch", 10]}),
    }
    for stage, (shape, outputs) in want.items():
        data = (onnx_dir / f"{stage}.onnx").read_bytes()
        assert str(REPO).encode() not in data  # no path of the exporting machine in the file
        model = onnx.load_from_string(data)
        onnx.checker.check_model(model, full_check=True)
        assert {o.domain: o.version for o in model.opset_import}[""] == 17
        entry = manifest["networks"][stage]
        assert entry["inputs"] == [{"name": "images", "shape": shape, "dtype": "uint8"}]
        assert {o["name"]: o["shape"] for o in entry["outputs"]} == outputs
        assert all(o["dtype"] == "float32" for o in entry["outputs"])
        props = {p.key: p.value for p in model.metadata_props}
        assert props["network"] == stage and props["weights_sha256"] == manifest["weights"]["sha256"]


@pytest.mark.slow  # compiles the module for each level size
def test_onnx_runtime_computes_what_the_modules_compute(params, sessions):
    rng = np.random.default_rng(3)
    for stage, size in [("rnet", 24), ("onet", 48)]:
        for batch in (1, 5, 33):
            crops = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
            got = sessions[stage].run(None, {"images": crops})
            for g, w in zip(got, _crop_reference(params, stage, crops)):
                np.testing.assert_allclose(g, w, rtol=0, atol=1e-5)
    for level in _levels():
        prob, box = sessions["pnet"].run(["prob", "box"], {"images": np.stack([level, level[::-1, ::-1]])})
        for k, image in enumerate([level, level[::-1, ::-1]]):
            want_prob, want_box = _whole_level(params["pnet"], np.ascontiguousarray(image))
            np.testing.assert_allclose(prob[k], want_prob, rtol=0, atol=1e-5)
            np.testing.assert_allclose(box[k], want_box, rtol=0, atol=1e-5)


def test_onnx_pnet_on_whole_levels_equals_the_packed_tiles(params, onnx_dir):
    from mtcnn_jax.onnx_runtime import OnnxNetworks

    nets = OnnxNetworks({s: str(onnx_dir / f"{s}.onnx") for s in ("pnet", "rnet", "onet")})
    levels = _levels()
    got = nets.pnet([lv.shape[:2] for lv in levels], levels.__getitem__)
    for (prob, reg), (want_prob, want_reg) in zip(got, tiles.pnet_levels(params["pnet"], levels)):
        np.testing.assert_allclose(prob, want_prob, rtol=0, atol=1e-5)
        np.testing.assert_allclose(reg, want_reg, rtol=0, atol=1e-5)


def test_without_onnx_runtime_loading_is_one_line(onnx_dir, tmp_path):
    code = ("from mtcnn_jax.deploy import load_model\n"
            "from mtcnn_jax.errors import UserError\n"
            "try:\n"
            f"    load_model({str(onnx_dir)!r})\n"
            "except UserError as err:\n"
            "    print(err)\n")
    proc = subprocess.run([sys.executable, "-c", code], env=blocked_env(tmp_path, ("onnxruntime", "jax")),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == "running an ONNX model needs ONNX Runtime: pip install onnxruntime\n"


# ----------------------------------------------------------------------------- the cascade, without JAX


def _match(want_boxes, got_boxes):
    """For each wanted box, the index of the got box nearest to it (max abs coordinate difference)."""
    if not len(want_boxes):
        return np.zeros(0, int)
    diff = np.abs(want_boxes[:, None, :] - got_boxes[None, :, :]).max(axis=2)
    return diff.argmin(axis=1)


@pytest.mark.slow
def test_onnx_cascade_without_jax_finds_the_faces_mtcnn_finds(onnx_dir, data_dir, tmp_path):
    paths = wider_sample(data_dir, 9) + [ASTRONAUT]  # 40 WIDER images spread over the events, and the portrait
    found, report = run_exported(onnx_dir, paths, tmp_path, ("jax", "jaxlib", "flax", "optax", "orbax"))
    assert not {"jax", "jaxlib", "flax"} & set(report["loaded"]), report["loaded"]
    assert "onnxruntime" in report["loaded"] and report["model_code"] == []
    det = MTCNN(compilation_cache=False)
    faces = worst_box = worst_landmark = worst_score = 0.0
    for path, (boxes, scores, landmarks) in zip(paths, found):
        want = det.detect(load_image(path))
        assert len(boxes) == len(want.boxes), f"{path}: {len(boxes)} faces, MTCNN() finds {len(want.boxes)}"
        nearest = _match(want.boxes, boxes)
        assert sorted(nearest.tolist()) == list(range(len(boxes))), path  # one to one
        if len(boxes):
            worst_box = max(worst_box, float(np.abs(boxes[nearest] - want.boxes).max()))
            worst_landmark = max(worst_landmark, float(np.abs(landmarks[nearest] - want.landmarks).max()))
            worst_score = max(worst_score, float(np.abs(scores[nearest] - want.scores).max()))
        faces += len(boxes)
    assert faces >= 200  # 245 with the defaults
    assert worst_box <= 1e-3 and worst_landmark <= 1e-3 and worst_score <= 1e-5, (worst_box, worst_landmark,
                                                                                    worst_score)
    print(json.dumps({"images": len(paths), "faces": faces, "max_box_px": worst_box,
                      "max_landmark_px": worst_landmark, "max_score": worst_score}))
