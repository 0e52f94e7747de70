"""The detector's CPU formulations of the networks (mtcnn_jax.inference) equal the modules and the authors'."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtcnn_jax import inference, models, networks, pretrained, tiles
from conftest import REPO

TOL = 1e-4  # against the authors' networks, as tests/test_models.py


@pytest.fixture(scope="module")
def params():
    return pretrained.load_pretrained()


def _pnet_any(params, image_u8):
    """inference.pnet on one uint8[H, W, 3] image of any size ≥ 12: padded to even H - 2, W - 2 and masked."""
    h, w = image_u8.shape[:2]
    hp, wp = h + (h % 2), w + (w % 2)
    canvas = np.zeros((1, hp, wp, 3), np.uint8)
    canvas[0, :h, :w] = image_u8
    mask = np.zeros((1, hp - 2, wp - 2), bool)
    mask[0, : h - 2, : w - 2] = True
    out = np.asarray(jax.jit(inference.pnet)(params, canvas, mask))[0]
    oh, ow = tiles.pnet_output_size(h, w)
    return out[:oh, :ow]


@pytest.mark.parametrize("source", ["bundled", "shared"])
def test_equal_authors_networks(params, source, request):
    if source == "bundled":
        oracle = np.load(REPO / "tests/fixtures/authors_nets_astronaut.npz")
    else:
        oracle = np.load(request.getfixturevalue("reference_dir") / "nets/authors_nets_io.npz")
    for i in (0, 1):
        out = _pnet_any(params["pnet"], oracle[f"pnet_in{i}"])
        assert out.shape[:2] == oracle[f"pnet_prob{i}"].shape[:2]
        np.testing.assert_allclose(out[..., 0], oracle[f"pnet_prob{i}"][..., 1], atol=TOL)
        np.testing.assert_allclose(out[..., 1:], oracle[f"pnet_reg{i}"], atol=TOL)
    prob, reg = jax.jit(inference.rnet)(params["rnet"], oracle["rnet_in"])
    np.testing.assert_allclose(prob, oracle["rnet_prob"][:, 1], atol=TOL)
    np.testing.assert_allclose(reg, oracle["rnet_reg"], atol=TOL)
    prob, reg, lms = jax.jit(inference.onet)(params["onet"], oracle["onet_in"])
    np.testing.assert_allclose(prob, oracle["onet_prob"][:, 1], atol=TOL)
    np.testing.assert_allclose(reg, oracle["onet_reg"], atol=TOL)
    np.testing.assert_allclose(lms, oracle["onet_landmarks"], atol=TOL)


def test_crop_networks_equal_the_modules(params):
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (37, 24, 24, 3), dtype=np.uint8)
    out = models.RNet().apply({"params": params["rnet"]}, models.normalize(crops))
    prob, reg = jax.jit(inference.rnet)(params["rnet"], crops)
    np.testing.assert_allclose(prob, jax.nn.softmax(out.logits)[:, 1], atol=1e-6)
    np.testing.assert_allclose(reg, out.box, atol=1e-5)
    crops = rng.integers(0, 256, (21, 48, 48, 3), dtype=np.uint8)
    out = models.ONet().apply({"params": params["onet"]}, models.normalize(crops))
    prob, reg, lms = jax.jit(inference.onet)(params["onet"], crops)
    np.testing.assert_allclose(prob, jax.nn.softmax(out.logits)[:, 1], atol=1e-6)
    np.testing.assert_allclose(reg, out.box, atol=1e-5)
    np.testing.assert_allclose(lms, out.landmarks, atol=1e-5)


def test_pnet_with_a_mask_equals_the_module(params):
    # Packed tiles: several pieces, each with its own ragged valid region.
    rng = np.random.default_rng(1)
    tiles = rng.integers(0, 256, (3, 40, 34, 3), dtype=np.uint8)
    mask = np.zeros((3, 38, 32), bool)
    mask[0] = True
    mask[1, :17, :25] = True  # odd extents: pooling windows half inside
    mask[2, 4:30, 2:9] = True
    mask[2, 31:, 12:] = True
    ref = models.PNet().apply({"params": params["pnet"]}, models.normalize(tiles), valid_mask=mask)
    got = np.asarray(jax.jit(inference.pnet)(params["pnet"], tiles, mask))
    np.testing.assert_allclose(got[..., 0], jax.nn.softmax(ref.logits)[..., 1], atol=1e-6)
    np.testing.assert_allclose(got[..., 1:], ref.box, atol=1e-5)


def test_conv1_in_blocks_equals_conv_then_pool(params):
    p = params["pnet"]
    rng = np.random.default_rng(2)
    x = models.normalize(rng.integers(0, 256, (2, 14, 20, 3), dtype=np.uint8))
    mask = rng.random((2, 12, 18)) > 0.3
    mask[1, :4, :4] = False  # a 2×2 pooling cell with no valid input → 0
    y = inference.prelu(p["prelu1"], inference.conv(p["conv1"], x))
    y = models.max_pool_ceil(jnp.where(mask[..., None], y, -jnp.inf), 2, 2)
    want = jnp.where(jnp.isfinite(y), y, 0.0)
    got = inference.pnet_conv1_pool(p, x, mask)
    assert got.shape == (2, 6, 9, 10)
    assert np.all(np.asarray(got[1, :2, :2]) == 0)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_pooling_by_slices_by_hand_and_against_reduce_window():
    x = jnp.arange(25.0).reshape(1, 5, 5, 1)
    # 2×2 stride 2 on 5×5: 3 per side, the last window only row/column 4 (as test_models).
    assert inference.max_pool_ceil(x, 2, 2)[0, :, :, 0].tolist() == [[6, 8, 9], [16, 18, 19], [21, 23, 24]]
    # 3×3 stride 2 on 6×6: ceil(3/2) + 1 = 3 per side; windows start at 0, 2, 4 (the last holds 2 of 3).
    x = jnp.arange(36.0).reshape(1, 6, 6, 1)
    assert inference.max_pool_ceil(x, 3, 2)[0, :, :, 0].tolist() == [[14, 16, 17], [26, 28, 29], [32, 34, 35]]
    rng = np.random.default_rng(3)
    for shape, window, stride in [((2, 22, 22, 4), 3, 2), ((1, 9, 8, 3), 3, 2), ((1, 21, 21, 2), 3, 2), ((2, 7, 10, 5), 2, 2)]:
        x = jnp.asarray(rng.normal(size=shape), jnp.float32)
        np.testing.assert_array_equal(inference.max_pool_ceil(x, window, stride), models.max_pool_ceil(x, window, stride))


def test_conv_as_patches_equals_lax_conv():
    rng = np.random.default_rng(4)
    p = {"kernel": jnp.asarray(rng.normal(size=(3, 2, 4, 5)), jnp.float32), "bias": jnp.asarray(rng.normal(size=5), jnp.float32)}
    x = jnp.asarray(rng.normal(size=(2, 7, 6, 4)), jnp.float32)
    got = inference.conv_patches(p, x)
    assert got.shape == (2, 5, 5, 5)
    np.testing.assert_allclose(got, inference.conv(p, x), atol=1e-5)
    # one output by hand: the sum of kernel × window plus bias
    want = float(jnp.sum(x[1, 2:5, 1:3, :] * p["kernel"][..., 3]) + p["bias"][3])
    assert abs(float(got[1, 2, 1, 3]) - want) < 1e-5


def test_detector_uses_them_on_the_cpu_and_the_modules_on_request(params, monkeypatch):
    assert jax.default_backend() != "cpu" or networks.cpu_formulation()
    monkeypatch.setenv("MTCNN_JAX_NETS", "modules")
    assert not networks.cpu_formulation()
