"""P-Net on packed tiles: every pyramid level of a group of images through one fixed-shape program.

P-Net is fully convolutional, so the authors run it on each pyramid level whole;
that would compile one program per level size. Instead each level is cut into
pieces of at most ``T × T`` pixels (:data:`PNET_TILE`) that overlap by 10 pixels
(P-Net's 12-pixel window minus its stride 2), starting at even offsets, so that
every window of the level lies whole in exactly one piece and the pieces'
outputs tile the level's output without overlap. Pieces of all levels of all
images are packed into ``T × T`` tiles (shelf packing at even offsets, so
pooling pairs never straddle two pieces) and run :data:`PNET_TILES_PER_CALL`
tiles at a time. The result equals P-Net on each whole level up to float
rounding (``tests/test_speed_invariants.py``), and any stream of image sizes
compiles one P-Net program.

R-Net and O-Net are fed the same way: :func:`run_crops` cuts the crops of all
images of a group straight into fixed batches. Both take the network as a
function, so the same packing feeds every backend of the cascade (the JAX
networks of :mod:`mtcnn_jax.networks`, the programs exported by
:mod:`mtcnn_jax.export`, ONNX Runtime sessions), and this module imports no JAX.
:func:`mirror_landmarks` undoes the mirroring of a crop (the detector's
``flip_landmarks`` runs O-Net on the mirrored crops of the faces it keeps).
"""

from __future__ import annotations

from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from mtcnn_jax import boxes as bx

#: Tile side (even) and tiles per call: a small fixed shape, so one program
#: whatever the image sizes and a working set that stays in the CPU's caches.
PNET_TILE = 128
PNET_TILES_PER_CALL = 4


def pnet_output_size(h: int, w: int) -> Tuple[int, int]:
    """Spatial size of P-Net's output for an ``h × w`` input (both ≥ 12)."""
    return (-(-(h - 2) // 2) - 4, -(-(w - 2) // 2) - 4)


class Piece(NamedTuple):
    """A rectangle of one pyramid level, run as part of a tile."""

    level: int  # index into the list of levels
    y0: int  # top-left corner in the level (even)
    x0: int
    h: int  # size in pixels (≤ T)
    w: int


def cut_level(index: int, hs: int, ws: int, tile: int) -> List[Piece]:
    """Pieces of an ``hs × ws`` level, so that each output cell's window lies in exactly one piece.

    Windows start at even offsets up to ``2 * (h' - 1)``, which is ``size - 12``
    for an even size and ``size - 11`` for an odd one (the last, partial pooling
    window reaches one pixel past the level). A piece at offset ``o`` holds the
    windows starting at ``o .. o + tile - 12``; the next piece starts ``tile - 10`` later.
    """
    step = tile - 10
    oh, ow = pnet_output_size(hs, ws)
    return [
        Piece(index, y, x, min(tile, hs - y), min(tile, ws - x))
        for y in range(0, 2 * (oh - 1) + 1, step)
        for x in range(0, 2 * (ow - 1) + 1, step)
    ]


def pack_pieces(pieces: Sequence[Piece], tile: int) -> List[Tuple[int, int, int]]:
    """Shelf packing, first fit by decreasing height: ``(tile index, y, x)`` for each piece, all even.

    Each piece goes on the first shelf (of any tile) tall enough with room left,
    else on a new shelf in the first tile with height left, else in a new tile.
    """
    even = lambda n: n + (n & 1)  # noqa: E731
    order = sorted(range(len(pieces)), key=lambda i: (-pieces[i].h, -pieces[i].w))
    place: list = [None] * len(pieces)
    shelves: List[list] = []  # [tile, y, height, x cursor]
    tile_top: List[int] = []  # height used in each tile
    for i in order:
        h, w = pieces[i].h, pieces[i].w
        for shelf in shelves:
            if shelf[2] >= h and shelf[3] + w <= tile:
                break
        else:
            t = next((k for k, top in enumerate(tile_top) if top + h <= tile), None)
            if t is None:
                t = len(tile_top)
                tile_top.append(0)
            shelf = [t, tile_top[t], min(even(h), tile - tile_top[t]), 0]
            tile_top[t] += even(h)
            shelves.append(shelf)
        place[i] = (shelf[0], shelf[1], shelf[3])
        shelf[3] += even(w)
    return place


def pnet_levels(params, levels: Sequence[np.ndarray], tile: int = 0, per_call: int = 0):
    """P-Net over whole levels (uint8[h, w, 3] each) → per level (prob float32[h', w'], reg float32[h', w', 4]).

    Equal, up to float rounding, to running :class:`mtcnn_jax.models.PNet` on
    each level alone (tested against :data:`mtcnn_jax.networks.pnet_level`).
    """
    return pnet_stream(params, [lv.shape[:2] for lv in levels], levels.__getitem__, tile, per_call)


#: A P-Net on packed tiles: ``(uint8[K, T, T, 3] tiles, bool[K, T - 2, T - 2] mask)`` →
#: float32[K, T/2 - 5, T/2 - 5, 5] (probability, regression), as :func:`mtcnn_jax.networks.pnet_tiles`.
TileNetwork = Callable[[np.ndarray, np.ndarray], object]


def pnet_stream(params, sizes: Sequence[Tuple[int, int]], make_level, tile: int = 0, per_call: int = 0,
                run: Optional[TileNetwork] = None):
    """:func:`pnet_levels` for levels made on demand: ``make_level(i)`` → uint8[h_i, w_i, 3], called in order.

    The packing needs only the sizes, so tiles are dispatched as soon as the
    levels they hold exist: the device runs P-Net on the first levels while the
    host is still resizing the next ones. ``run``: the tile network (default:
    :func:`mtcnn_jax.networks.pnet_tiles` with ``params``); its results are
    read (``np.asarray``) only once every tile is dispatched.
    """
    tile = tile or PNET_TILE
    per_call = per_call or PNET_TILES_PER_CALL
    if run is None:
        from mtcnn_jax import networks  # noqa: PLC0415  (JAX loads only for the JAX networks)

        run = lambda tiles_u8, mask: networks.pnet_tiles(params, tiles_u8, mask)  # noqa: E731
    pieces = [p for i, (h, w) in enumerate(sizes) for p in cut_level(i, h, w, tile)]
    place = pack_pieces(pieces, tile)
    n_tiles = max((t for t, _, _ in place), default=-1) + 1
    need = [-1] * n_tiles  # the last level each tile holds a piece of
    held: List[list] = [[] for _ in range(n_tiles)]
    for p, (t, y, x) in zip(pieces, place):
        need[t] = max(need[t], p.level)
        held[t].append((p, y, x))
    order = sorted(range(n_tiles), key=lambda t: (need[t], t))
    levels: list = [None] * len(sizes)
    pending, done = [], 0

    def dispatch(ids):
        tiles = np.zeros((per_call, tile, tile, 3), np.uint8)
        mask = np.zeros((per_call, tile - 2, tile - 2), bool)
        for j, t in enumerate(ids):
            for p, y, x in held[t]:
                tiles[j, y : y + p.h, x : x + p.w] = levels[p.level][p.y0 : p.y0 + p.h, p.x0 : p.x0 + p.w]
                mask[j, y : y + p.h - 2, x : x + p.w - 2] = True
        pending.append((ids, run(tiles, mask)))

    for i in range(len(sizes)):
        levels[i] = make_level(i)
        ready = done
        while ready < n_tiles and need[order[ready]] <= i:
            ready += 1
        while ready - done >= per_call or (i == len(sizes) - 1 and done < ready):
            dispatch(order[done : done + per_call])
            done += len(order[done : done + per_call])
    out: list = [None] * n_tiles
    for ids, result in pending:
        result = np.asarray(result)
        for j, t in enumerate(ids):
            out[t] = result[j]
    maps = []
    for h, w in sizes:
        oh, ow = pnet_output_size(h, w)
        maps.append(np.zeros((max(oh, 0), max(ow, 0), 5), np.float32))
    for p, (t, y, x) in zip(pieces, place):
        oh, ow = pnet_output_size(p.h, p.w)
        maps[p.level][p.y0 // 2 : p.y0 // 2 + oh, p.x0 // 2 : p.x0 // 2 + ow] = out[t][y // 2 : y // 2 + oh, x // 2 : x // 2 + ow]
    return [(m[..., 0], m[..., 1:]) for m in maps]


def run_crops(fn, images, boxes_list, size: int, method: str, batch: int, fixed: bool = True, mirrored=None):
    """Crop network ``fn`` on the ``size × size`` crops of ``boxes_list[k]`` (0-based inclusive) in ``images[k]``.

    ``fn(uint8[B, size, size, 3])`` → a tuple of per-crop outputs. Crops are cut
    straight into batches of ``batch``, and each batch is dispatched as soon as
    it is full, so the device computes while the host cuts the next one; the last
    batch is zero-padded to ``batch`` when ``fixed`` (one program shape), else cut
    short. ``mirrored``: optional bool arrays, one per image as ``boxes_list``;
    the crops of the boxes flagged are mirrored left to right before ``fn`` sees
    them. Returns the outputs for all boxes in order (cut back to their number),
    or ``None`` when there are none.
    """
    pending: list = []
    buf, fill = None, 0
    total = 0
    for k, (image, boxes) in enumerate(zip(images, boxes_list)):
        at = 0
        while at < len(boxes):
            if buf is None:
                buf, fill = np.zeros((batch, size, size, 3), np.uint8), 0
            take = min(batch - fill, len(boxes) - at)
            buf[fill : fill + take] = bx.crop_and_resize(image, boxes[at : at + take], size, method)
            if mirrored is not None:
                flip = fill + np.flatnonzero(np.asarray(mirrored[k][at : at + take], bool))
                buf[flip] = buf[flip][:, :, ::-1]
            fill, at, total = fill + take, at + take, total + take
            if fill == batch:
                pending.append(fn(buf))
                buf = None
    if buf is not None:
        pending.append(fn(buf if fixed else buf[:fill]))
    if not pending:
        return None

    return [np.concatenate([np.asarray(r[i]) for r in pending])[:total] for i in range(len(pending[0]))]


#: Point order of a horizontally mirrored face: left/right eyes and mouth corners swap.
MIRROR = (1, 0, 2, 4, 3)


def mirror_landmarks(lms):
    """Landmarks ``[..., 10]`` (x1..x5, y1..y5, relative to the window) of the mirrored window.

    Mirroring maps x to ``1 - x`` and swaps the left and right points (eyes 0↔1,
    mouth corners 3↔4); y is unchanged. Mirroring twice gives the input back.
    Works on NumPy arrays of any leading shape; returns the input's dtype.
    """
    lms = np.asarray(lms)
    order = list(MIRROR)
    return np.concatenate([1.0 - lms[..., :5][..., order], lms[..., 5:][..., order]], axis=-1).astype(lms.dtype)
