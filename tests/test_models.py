"""The networks and the converted weights reproduce the authors' networks exactly."""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtcnn_jax import models, pretrained
from conftest import REPO

TOL = 1e-4


@pytest.fixture(scope="module")
def params():
    return pretrained.load_pretrained()


def _check_against(oracle, params):
    for i in (0, 1):
        out = models.PNet().apply({"params": params["pnet"]}, models.normalize(oracle[f"pnet_in{i}"][None]))
        np.testing.assert_allclose(jax.nn.softmax(out.logits[0]), oracle[f"pnet_prob{i}"], atol=TOL)
        np.testing.assert_allclose(out.box[0], oracle[f"pnet_reg{i}"], atol=TOL)
    out = models.RNet().apply({"params": params["rnet"]}, models.normalize(oracle["rnet_in"]))
    np.testing.assert_allclose(jax.nn.softmax(out.logits), oracle["rnet_prob"], atol=TOL)
    np.testing.assert_allclose(out.box, oracle["rnet_reg"], atol=TOL)
    out = models.ONet().apply({"params": params["onet"]}, models.normalize(oracle["onet_in"]))
    np.testing.assert_allclose(jax.nn.softmax(out.logits), oracle["onet_prob"], atol=TOL)
    np.testing.assert_allclose(out.box, oracle["onet_reg"], atol=TOL)
    np.testing.assert_allclose(out.landmarks, oracle["onet_landmarks"], atol=TOL)


def test_outputs_equal_authors_networks_on_bundled_fixture(params):
    # Produced once by scripts/make_net_fixtures.py with facenet-pytorch 2.6.0.
    oracle = np.load(REPO / "tests/fixtures/authors_nets_astronaut.npz")
    assert oracle["onet_prob"][0, 1] > 0.99  # the face crop is a face, the noise is not
    assert oracle["onet_prob"][-1, 1] < 0.5
    _check_against(oracle, params)


def test_outputs_equal_authors_networks_on_shared_oracle(params, reference_dir):
    _check_against(np.load(reference_dir / "nets/authors_nets_io.npz"), params)


def test_parameter_counts(params):
    assert [models.count_params(params[s]) for s in ("pnet", "rnet", "onet")] == [6632, 100178, 389040]
    key = jax.random.key(0)
    assert models.count_params(models.init_params("pnet", key)) == 6632
    # landmark head for training: 32*10 + 10 more
    assert models.count_params(models.init_params("pnet", key, landmarks=True)) == 6632 + 330


def test_ceil_pooling_keeps_partial_window():
    x = jnp.arange(25.0).reshape(1, 5, 5, 1)
    # 2×2 stride 2 on 5×5 → ceil(3/2)+1 = 3 per side; last window covers only row/column 4.
    out = models.max_pool_ceil(x, 2, 2)[0, :, :, 0]
    assert out.tolist() == [[6, 8, 9], [16, 18, 19], [21, 23, 24]]
    # 3×3 stride 2 on 24 → ceil(21/2)+1 = 12 (R-Net's first pooling: 22 → 11)
    assert models.max_pool_ceil(jnp.zeros((1, 22, 22, 1)), 3, 2).shape == (1, 11, 11, 1)
    # (windows, cells the last window lacks): 5 by 2/2 → 3, 1; 22 by 3/2 → 11, 1; 21 by 3/2 → 10, 0; 46 by 3/2 → 23, 1
    assert [models.ceil_pool_geometry(*a) for a in [(5, 2, 2), (22, 3, 2), (21, 3, 2), (46, 3, 2)]] == [(3, 1), (11, 1), (10, 0), (23, 1)]


def test_padded_pnet_equals_unpadded_on_valid_region(params):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (1, 37, 29, 3), dtype=np.uint8)  # odd sides: partial pool windows
    ref = models.PNet().apply({"params": params["pnet"]}, models.normalize(img))
    canvas = np.full((1, 64, 48, 3), 255, np.uint8)
    canvas[:, :37, :29] = img
    out = models.PNet().apply({"params": params["pnet"]}, models.normalize(canvas), jnp.array([37, 29]))
    h, w = ref.logits.shape[1:3]
    np.testing.assert_allclose(out.logits[:, :h, :w], ref.logits, atol=1e-5)
    np.testing.assert_allclose(out.box[:, :h, :w], ref.box, atol=1e-5)


@pytest.mark.skipif(importlib.util.find_spec("mtcnn") is None,
                    reason="the 'mtcnn' package (dev extra) is not installed: cannot re-convert the weights")
def test_shipped_weights_equal_a_fresh_conversion(tmp_path):
    import subprocess, sys
    out = tmp_path / "fresh.msgpack"
    subprocess.run([sys.executable, str(REPO / "scripts/convert_weights.py"), "--out", str(out)], check=True)
    fresh, shipped = pretrained.load_params(out), pretrained.load_pretrained()
    for stage in pretrained.STAGES:
        jax.tree_util.tree_map(np.testing.assert_array_equal, fresh[stage], shipped[stage])


def test_load_params_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.msgpack"
    bad.write_bytes(b"\x80\x04not msgpack at all")
    with pytest.raises(pretrained.WeightsError, match="bad.msgpack"):
        pretrained.load_params(bad)
    with pytest.raises(pretrained.WeightsError, match="no such weights file"):
        pretrained.load_params(tmp_path / "missing.msgpack")
    wrong = tmp_path / "wrong.msgpack"
    p = pretrained.load_pretrained()
    p["rnet"]["dense4"]["kernel"] = np.zeros((10, 128), np.float32)
    pretrained.save_params(wrong, p)
    with pytest.raises(pretrained.WeightsError, match="rnet: parameter shapes"):
        pretrained.load_params(wrong)
