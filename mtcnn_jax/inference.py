"""P-Net, R-Net and O-Net forward passes for detection, written for XLA on the CPU.

The same networks as :mod:`mtcnn_jax.models` with the same params pytrees, the
same inputs (uint8 RGB pixels) and the same outputs up to float rounding (tested
to 1e-6 against the ``flax.linen`` modules and the authors' networks), but
formulated for how XLA's CPU backend runs small convolutions (the timings behind
each choice are in ``benchmarks/speed_README.md``):

* **Max pooling as strided slices.** XLA's ``lax.reduce_window`` is several
  times slower than an elementwise maximum of the ``window`` shifted strided
  slices along each axis. Max is exact, so the outputs are identical.
* **First convolutions (3 input channels) as patches × matrix.** With three
  input channels XLA's convolution uses the vector units poorly; the 27 shifted
  copies of the input side by side times the ``[27, C_out]`` kernel is one
  well-shaped matrix product.
* **P-Net's conv1 and its 2×2 pooling in one product.** Its ten output channels
  are too few for the vector units, so conv1 is computed for 2×2 blocks of
  output positions at once: a 4×4×3 input patch (48 values) times a
  ``[48, 4 × 10]`` matrix holding the kernel at the four offsets; the PReLU and
  the pooling max over the block follow in the same fusion.
* **P-Net's two 1×1 heads as one ``[32, 6]`` product**, the face probability as
  ``sigmoid(l1 - l0)`` (= ``softmax(l)[1]``).

The deeper convolutions stay ``lax.conv_general_dilated``: with 10 to 64 input
channels XLA's own convolution is as fast as patches × matrix or faster.

Which formulation the detector runs (this one on the CPU backend, the modules
on GPUs and TPUs) is decided in :mod:`mtcnn_jax.networks`. Training always uses
the modules (their gradients).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mtcnn_jax.models import _flatten_whc, ceil_pool_geometry, normalize


def prelu(params, x):
    """Per-channel PReLU with the ``alpha`` of a :class:`mtcnn_jax.models.PReLU`'s params."""
    return jnp.where(x >= 0, x, params["alpha"] * x)


def max_pool_ceil(x: jax.Array, window: int, stride: int) -> jax.Array:
    """:func:`mtcnn_jax.models.max_pool_ceil` (Caffe's ceil rounding) as maxima of strided slices.

    x: float32[N, H, W, C]. Output ``[N, ceil((H - window) / stride) + 1, …, C]``;
    the cells a last partial window lacks are -inf (ignored), as there.
    """
    (oh, ph), (ow, pw) = (ceil_pool_geometry(n, window, stride) for n in x.shape[1:3])
    if ph or pw:
        x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), constant_values=-jnp.inf)
    rows = None
    for i in range(window):
        s = x[:, i : i + (oh - 1) * stride + 1 : stride]
        rows = s if rows is None else jnp.maximum(rows, s)
    out = None
    for j in range(window):
        s = rows[:, :, j : j + (ow - 1) * stride + 1 : stride]
        out = s if out is None else jnp.maximum(out, s)
    return out


def conv(params, x: jax.Array) -> jax.Array:
    """A VALID, stride-1 convolution with a ``flax.linen.Conv``'s params (HWIO kernel, bias)."""
    y = jax.lax.conv_general_dilated(x, params["kernel"], (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + params["bias"]


def conv_patches(params, x: jax.Array) -> jax.Array:
    """:func:`conv` as one matrix product: the ``kh × kw`` shifted copies of ``x`` side by side × the kernel.

    x: float32[N, H, W, C] → float32[N, H - kh + 1, W - kw + 1, C_out]. The patch
    order ``(dy, dx, c)`` is the HWIO kernel's row-major order.
    """
    kh, kw, ci, co = params["kernel"].shape
    n, h, w, _ = x.shape
    oh, ow = h - kh + 1, w - kw + 1
    cols = jnp.concatenate([x[:, i : i + oh, j : j + ow, :] for i in range(kh) for j in range(kw)], axis=-1)
    y = cols.reshape(-1, kh * kw * ci) @ params["kernel"].reshape(kh * kw * ci, co)
    return y.reshape(n, oh, ow, co) + params["bias"]


def dense(params, x: jax.Array) -> jax.Array:
    return x @ params["kernel"] + params["bias"]


def pnet_conv1_pool(params, x: jax.Array, valid_mask: jax.Array) -> jax.Array:
    """P-Net's conv1 → PReLU → (mask) → 2×2/2 ceil max pooling → (masked cells to 0), in 2×2 output blocks.

    x: float32[N, H, W, 3] with ``H - 2`` and ``W - 2`` even; valid_mask:
    bool[N, H - 2, W - 2] (see :class:`mtcnn_jax.models.PNet`). Returns
    float32[N, (H - 2) / 2, (W - 2) / 2, 10], as the module's first stage: pooling
    cells whose window holds no valid conv1 output are 0.

    Output block (i, j) covers conv1 outputs (2i + di, 2j + dj), di, dj ∈ {0, 1},
    whose 3×3 windows lie in the 4×4 input patch at (2i, 2j); the matrix column
    for (di, dj, c) holds the kernel shifted by (di, dj) inside that patch.
    """
    k, b = params["conv1"]["kernel"], params["conv1"]["bias"]  # [3, 3, 3, 10], [10]
    n, h, w, ci = x.shape
    oh, ow = (h - 2) // 2, (w - 2) // 2
    patches = jnp.concatenate(
        [x[:, i : i + 2 * oh - 1 : 2, j : j + 2 * ow - 1 : 2, :] for i in range(4) for j in range(4)], axis=-1
    )  # [N, oh, ow, 4 * 4 * 3], order (i, j, c)
    shifted = jnp.stack(
        [jnp.pad(k, ((di, 1 - di), (dj, 1 - dj), (0, 0), (0, 0))) for di in range(2) for dj in range(2)], axis=3
    )  # [4, 4, 3, 4 (di, dj), 10]
    co = k.shape[-1]
    y = patches.reshape(-1, 16 * ci) @ shifted.reshape(16 * ci, 4 * co)
    y = prelu(params["prelu1"], y.reshape(n, oh, ow, 4, co) + b)
    block_mask = valid_mask.reshape(n, oh, 2, ow, 2).transpose(0, 1, 3, 2, 4).reshape(n, oh, ow, 4, 1)
    y = jnp.where(block_mask, y, -jnp.inf).max(axis=3)
    return jnp.where(jnp.isfinite(y), y, 0.0)


def pnet(params, images_u8: jax.Array, valid_mask: jax.Array) -> jax.Array:
    """P-Net on uint8[N, H, W, 3] pixels (``H - 2``, ``W - 2`` even) with bool[N, H - 2, W - 2] ``valid_mask``.

    Returns float32[N, (H - 2) / 2 - 4, (W - 2) / 2 - 4, 5]: the face probability,
    then the regression ``dx1, dy1, dx2, dy2``; cell (i, j) is the window at input
    pixel (2j, 2i) (:class:`mtcnn_jax.models.PNet`).
    """
    x = pnet_conv1_pool(params, normalize(images_u8), valid_mask)
    x = prelu(params["prelu2"], conv(params["conv2"], x))
    x = prelu(params["prelu3"], conv(params["conv3"], x))
    heads = {"kernel": jnp.concatenate([params["face"]["kernel"], params["box"]["kernel"]], axis=-1)[0, 0],
             "bias": jnp.concatenate([params["face"]["bias"], params["box"]["bias"]])}
    out = dense(heads, x)  # [N, h', w', 6]: logits (2), box (4)
    prob = jax.nn.sigmoid(out[..., 1:2] - out[..., 0:1])
    return jnp.concatenate([prob, out[..., 2:]], axis=-1)


def rnet(params, crops_u8: jax.Array):
    """R-Net on uint8[B, 24, 24, 3] → face probability float32[B], regression float32[B, 4]."""
    x = normalize(crops_u8)
    x = max_pool_ceil(prelu(params["prelu1"], conv_patches(params["conv1"], x)), 3, 2)
    x = max_pool_ceil(prelu(params["prelu2"], conv(params["conv2"], x)), 3, 2)
    x = prelu(params["prelu3"], conv(params["conv3"], x))
    x = prelu(params["prelu4"], dense(params["dense4"], _flatten_whc(x)))
    return jax.nn.softmax(dense(params["face"], x), axis=-1)[:, 1], dense(params["box"], x)


def onet(params, crops_u8: jax.Array):
    """O-Net on uint8[B, 48, 48, 3] → probability [B], regression [B, 4], landmarks [B, 10] (x1..x5, y1..y5)."""
    x = normalize(crops_u8)
    x = max_pool_ceil(prelu(params["prelu1"], conv_patches(params["conv1"], x)), 3, 2)
    x = max_pool_ceil(prelu(params["prelu2"], conv(params["conv2"], x)), 3, 2)
    x = max_pool_ceil(prelu(params["prelu3"], conv(params["conv3"], x)), 2, 2)
    x = prelu(params["prelu4"], conv(params["conv4"], x))
    x = prelu(params["prelu5"], dense(params["dense5"], _flatten_whc(x)))
    prob = jax.nn.softmax(dense(params["face"], x), axis=-1)[:, 1]
    return prob, dense(params["box"], x), dense(params["landmarks"], x)
