"""P-Net, R-Net and O-Net (Zhang et al. 2016, Fig. 2) as ``flax.linen`` modules.

The layer shapes match the networks the authors released, so their weights load
exactly (see :mod:`mtcnn_jax.pretrained`):

=========  ==========================================================  ==========
network    layers                                                      parameters
=========  ==========================================================  ==========
P-Net      conv3x3(10) pool2 conv3x3(16) conv3x3(32) → face, box          6,632
R-Net      conv3x3(28) pool3 conv3x3(48) pool3 conv2x2(64) fc128 → …    100,178
O-Net      conv3x3(32) pool3 conv3x3(64) pool3 conv3x3(64) pool2         389,040
           conv2x2(128) fc256 → face, box, landmarks
=========  ==========================================================  ==========

Conventions shared by all three:

* Input: float32[N, H, W, 3], RGB, normalised as ``(pixel - 127.5) / 128``
  (:func:`normalize`).
* Every convolution is followed by a per-channel PReLU; pooling is max pooling
  with Caffe's *ceil* rounding (a last, partial window is kept).
* Output: :class:`NetOutput` with the face/non-face *logits* (index 0 = non-face,
  1 = face; apply ``jax.nn.softmax`` for probabilities), the box regression
  ``(dx1, dy1, dx2, dy2)`` in units of the input window's size, and, when the
  network has a landmark head, landmarks as ``(x1..x5, y1..y5)`` relative to the
  input window (0 = left/top edge, 1 = right/bottom edge), points in the order
  left eye, right eye, nose, left mouth corner, right mouth corner.

The released P-Net and R-Net have no landmark head; ``landmarks=True`` adds one
for joint training (the paper trains all three with the landmark loss).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

# The mirrored point order and mirror_landmarks live with the crop batches the detector mirrors
# (mtcnn_jax.tiles, which needs no Flax); importable from here as before.
from mtcnn_jax.tiles import MIRROR, mirror_landmarks  # noqa: F401


class NetOutput(NamedTuple):
    """What each network returns; see the module docstring for the layouts."""

    logits: jax.Array  # [..., 2]
    box: jax.Array  # [..., 4]
    landmarks: Optional[jax.Array] = None  # [..., 10] or None


def normalize(images_uint8: jax.Array) -> jax.Array:
    """uint8 (or float) RGB pixels → the networks' input scale, float32."""
    return (jnp.asarray(images_uint8, jnp.float32) - 127.5) * 0.0078125


class PReLU(nn.Module):
    """Parametric ReLU with one slope per channel (the last axis)."""

    init_slope: float = 0.25

    @nn.compact
    def __call__(self, x):
        alpha = self.param(
            "alpha", nn.initializers.constant(self.init_slope), (x.shape[-1],), jnp.float32
        )
        return jnp.where(x >= 0, x, alpha * x)


def ceil_pool_geometry(n: int, window: int, stride: int):
    """``(out, pad)`` of Caffe's ceil-rounded pooling along an axis of ``n`` cells.

    ``out = ceil((n - window) / stride) + 1`` windows; ``pad`` cells (≥ 0) past the
    end that the last, partial window lacks. E.g. (5, 2, 2) → (3, 1); (22, 3, 2) → (11, 1).
    """
    out = -(-(n - window) // stride) + 1
    return out, max(0, (out - 1) * stride + window - n)


def max_pool_ceil(x: jax.Array, window: int, stride: int) -> jax.Array:
    """Max pooling over H and W of NHWC ``x`` with Caffe's ceil rounding.

    Output size per axis is ``ceil((n - window) / stride) + 1``; the missing
    right/bottom cells of the last window are treated as -inf (ignored).
    """
    pads = [(0, ceil_pool_geometry(n, window, stride)[1]) for n in x.shape[1:3]]
    return jax.lax.reduce_window(
        x,
        -jnp.inf,
        jax.lax.max,
        (1, window, window, 1),
        (1, stride, stride, 1),
        [(0, 0), pads[0], pads[1], (0, 0)],
    )


def _flatten_whc(x: jax.Array) -> jax.Array:
    """Flatten NHWC features in (W, H, C) order, as the released dense layers expect."""
    return jnp.transpose(x, (0, 2, 1, 3)).reshape(x.shape[0], -1)


def _conv(features: int, k: int, name: str) -> nn.Conv:
    return nn.Conv(features, (k, k), padding="VALID", name=name)


class PNet(nn.Module):
    """Proposal network: fully convolutional, a 12×12 window with stride 2.

    ``__call__(x, valid_hw=None)``: ``x`` float32[N, H, W, 3] (H, W ≥ 12) gives
    outputs of spatial size ``(h', w')`` with ``h' = ceil((H - 2) / 2) - 4``
    (e.g. 12 → 1, 61 → 26). Output cell (i, j) looks at the window whose top-left
    corner is pixel (2j, 2i) of the input.

    ``valid_hw``: optional int32[2], the real image size when ``x`` was padded on
    the bottom/right to a larger bucket shape. Pooling then ignores the padding
    exactly as it would ignore the image border, so the outputs on the valid
    region equal those of the unpadded image (cells past the valid region are
    garbage and must be cropped by the caller).

    ``valid_mask``: the general form, bool[N, H - 2, W - 2], True where conv1's
    3×3 window lies on real pixels (e.g. several image pieces packed into one
    input); ``valid_hw`` is the rectangle case of it.
    """

    landmarks: bool = False

    @nn.compact
    def __call__(self, x, valid_hw=None, valid_mask=None):
        x = PReLU(name="prelu1")(_conv(10, 3, "conv1")(x))
        if valid_hw is not None:
            rows = jnp.arange(x.shape[1])[None, :, None] < valid_hw[0] - 2
            cols = jnp.arange(x.shape[2])[None, None, :] < valid_hw[1] - 2
            valid_mask = rows & cols
        if valid_mask is not None:
            x = jnp.where(valid_mask[..., None], x, -jnp.inf)
        x = max_pool_ceil(x, 2, 2)
        if valid_mask is not None:
            x = jnp.where(jnp.isfinite(x), x, 0.0)
        x = PReLU(name="prelu2")(_conv(16, 3, "conv2")(x))
        x = PReLU(name="prelu3")(_conv(32, 3, "conv3")(x))
        logits = _conv(2, 1, "face")(x)
        box = _conv(4, 1, "box")(x)
        lms = _conv(10, 1, "landmarks")(x) if self.landmarks else None
        return NetOutput(logits, box, lms)


class RNet(nn.Module):
    """Refine network on 24×24 crops: float32[N, 24, 24, 3] → per-crop outputs [N, …]."""

    landmarks: bool = False

    @nn.compact
    def __call__(self, x):
        x = PReLU(name="prelu1")(_conv(28, 3, "conv1")(x))
        x = max_pool_ceil(x, 3, 2)
        x = PReLU(name="prelu2")(_conv(48, 3, "conv2")(x))
        x = max_pool_ceil(x, 3, 2)
        x = PReLU(name="prelu3")(_conv(64, 2, "conv3")(x))
        x = PReLU(name="prelu4")(nn.Dense(128, name="dense4")(_flatten_whc(x)))
        logits = nn.Dense(2, name="face")(x)
        box = nn.Dense(4, name="box")(x)
        lms = nn.Dense(10, name="landmarks")(x) if self.landmarks else None
        return NetOutput(logits, box, lms)


class ONet(nn.Module):
    """Output network on 48×48 crops: float32[N, 48, 48, 3] → per-crop outputs [N, …]."""

    landmarks: bool = True

    @nn.compact
    def __call__(self, x):
        x = PReLU(name="prelu1")(_conv(32, 3, "conv1")(x))
        x = max_pool_ceil(x, 3, 2)
        x = PReLU(name="prelu2")(_conv(64, 3, "conv2")(x))
        x = max_pool_ceil(x, 3, 2)
        x = PReLU(name="prelu3")(_conv(64, 3, "conv3")(x))
        x = max_pool_ceil(x, 2, 2)
        x = PReLU(name="prelu4")(_conv(128, 2, "conv4")(x))
        x = PReLU(name="prelu5")(nn.Dense(256, name="dense5")(_flatten_whc(x)))
        logits = nn.Dense(2, name="face")(x)
        box = nn.Dense(4, name="box")(x)
        lms = nn.Dense(10, name="landmarks")(x) if self.landmarks else None
        return NetOutput(logits, box, lms)


#: Input side of each stage's window, in pixels.
INPUT_SIZE = {"pnet": 12, "rnet": 24, "onet": 48}


def create(stage: str, landmarks: Optional[bool] = None) -> nn.Module:
    """The module for ``stage`` in {"pnet", "rnet", "onet"}.

    ``landmarks=None`` gives the released layout (a landmark head on O-Net only).
    """
    cls = {"pnet": PNet, "rnet": RNet, "onet": ONet}[stage]
    return cls() if landmarks is None else cls(landmarks=landmarks)


def init_params(stage: str, rng: jax.Array, landmarks: Optional[bool] = None):
    """Freshly initialised params (a plain pytree) for ``stage``."""
    size = INPUT_SIZE[stage]
    return create(stage, landmarks).init(rng, jnp.zeros((1, size, size, 3), jnp.float32))["params"]


def count_params(params) -> int:
    """Total number of scalars in a params pytree."""
    return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))
