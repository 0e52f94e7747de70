"""Annotated images (mtcnn_jax.draw): score labels on a filled background in the box colour,
placed where they overlap no other label, sized to the face; by hand-checkable pixels."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mtcnn_jax import draw

GREY = 128


def _grey(h=300, w=300):
    return np.full((h, w, 3), GREY, np.uint8)


def _is(img, colour):
    return np.all(img == np.asarray(colour, np.uint8), axis=-1)


def _disjoint(rects):
    return all(not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])
               for a, b in itertools.combinations(rects, 2))


def test_text_contrasts_with_the_label():
    assert draw.text_colour((0, 255, 0)) == (0, 0, 0)  # black on green
    assert draw.text_colour((0, 0, 255)) == (255, 255, 255)  # white on blue
    assert draw.text_colour((255, 255, 0)) == (0, 0, 0)


def test_single_face_label_sits_on_the_top_edge_on_a_filled_background():
    image = _grey()
    box = np.array([[40.0, 60.0, 140.0, 160.0]])  # lines 1 px (at most 1 per 300 px of image)
    out = draw.annotate(image, box, np.array([0.93]))
    [label] = draw.layout_labels(box, np.array([0.93]), image.shape)
    assert label.text == "0.93"
    x1, y1, x2, y2 = label.rect
    # above the box, left-aligned with it: the box's top edge is row 60, its left edge column 40
    assert (x1, y2) == (40, 60) and y1 < y2 and x2 > x1
    assert _is(out[60, 40:140], draw.BOX_COLOUR).all()  # the edge itself is not covered
    # about 0.4 of the box wide: text scale 0.4 * 100 / width of "0.93" at scale 1
    assert 30 <= x2 - x1 <= 60 and 12 <= y2 - y1 <= 30
    inside = out[y1:y2, x1:x2]
    green, dark = _is(inside, draw.BOX_COLOUR), inside.max(axis=-1) < 100
    assert green.mean() > 0.5  # the filled background
    assert dark.mean() > 0.05  # the text, in black (contrasting with green; antialiased)
    assert not (_is(inside, (GREY,) * 3)).any()  # no photo shows through
    assert green[0].all() and green[-1].all()  # the first and last rows are pure background
    # just outside the label: the photo, untouched
    assert (out[y1 - 1, x1:x2] == GREY).all() and (out[y1:y2, x2] == GREY).all()
    # the label is drawn on a copy
    assert (image == GREY).all()


def test_without_room_above_the_label_goes_below_or_inside():
    image = _grey(200, 200)
    boxes = np.array([[20.0, 0.0, 120.0, 100.0]])
    [label] = draw.layout_labels(boxes, np.array([0.5]), image.shape)
    assert label.rect[1] >= 100  # below the box (the first place that fits)
    tall = np.array([[20.0, 0.0, 120.0, 195.0]])  # no room above or below: inside, top left
    [inside] = draw.layout_labels(tall, np.array([0.5]), image.shape)
    x1, y1, x2, y2 = inside.rect
    assert 20 < x1 and 0 < y1 and x2 < 120 and y2 < 195 / 3 + y1
    out = draw.annotate(image, tall, np.array([0.5]))
    assert _is(out[y1:y2, x1:x2], draw.BOX_COLOUR).mean() > 0.5


def test_label_is_kept_inside_the_image_sideways():
    image = _grey(200, 200)
    boxes = np.array([[170.0, 80.0, 230.0, 140.0]])  # runs off the right edge
    [label] = draw.layout_labels(boxes, np.array([0.9]), image.shape)
    assert label.rect[2] <= 200 and label.rect[0] >= 0


def test_text_size_follows_the_face():
    image = _grey(1000, 1000)
    boxes = np.array([[100.0, 100.0, 160.0, 160.0], [400.0, 400.0, 640.0, 640.0]])  # 60 and 240 px wide
    small, big = draw.layout_labels(boxes, np.array([0.9, 0.9]), image.shape)
    assert big.scale == pytest.approx(4 * small.scale, rel=0.05)
    assert (big.rect[2] - big.rect[0]) > 3 * (small.rect[2] - small.rect[0])
    # and it is bounded by the image: a huge face in a small image gets a moderate label
    [capped] = draw.layout_labels(np.array([[0.0, 50.0, 300.0, 290.0]]), np.array([0.9]), (300, 300, 3))
    assert capped.scale == 0.5  # max(0.5, 300 / 600)


def test_crowd_labels_never_overlap():
    rng = np.random.default_rng(0)
    image = _grey(400, 400)
    xy = rng.uniform(0, 360, (80, 2))
    size = rng.uniform(25, 60, (80, 1))
    boxes = np.concatenate([xy, xy + size], axis=1)  # 80 boxes, heavily overlapping
    scores = rng.uniform(0.5, 1.0, 80)
    labels = draw.layout_labels(boxes, scores, image.shape)
    drawn = [lab for lab in labels if lab is not None]
    rects = [lab.rect for lab in drawn]
    assert len(rects) >= 20 and _disjoint(rects)
    assert all(0 <= x1 < x2 <= 400 and 0 <= y1 < y2 <= 400 for x1, y1, x2, y2 in rects)
    assert any(lab is None for lab in labels)  # too crowded: some go without
    assert any(lab.scale == draw.MIN_TEXT_SCALE for lab in drawn)  # and some were shrunk to fit
    # the best-scoring face got the place it prefers, on its box's top edge
    best = int(np.argmax(scores))
    line = max(1, round((round(boxes[best, 2]) - round(boxes[best, 0])) / 50))
    assert labels[best].rect[3] == round(boxes[best, 1]) - line // 2
    # every drawn label is a filled green rectangle with black text on it, whole
    out = draw.annotate(image, boxes, scores, None)
    for x1, y1, x2, y2 in rects:
        inside = out[y1:y2, x1:x2]
        assert _is(inside, draw.BOX_COLOUR).mean() > 0.5 and _is(inside, (0, 0, 0)).any()


def test_wider_grid_of_faces_gets_every_label():
    """Faces in a grid, boxes touching (as in a mosaic of thumbnails): all labelled, none overlapping."""
    image = _grey(600, 900)
    boxes = np.array([[x, y, x + 95.0, y + 110.0] for y in range(0, 600, 120) for x in range(0, 900, 100)])
    labels = draw.layout_labels(boxes, np.linspace(0.99, 0.9, len(boxes)), image.shape)
    assert all(lab is not None for lab in labels)
    assert _disjoint([lab.rect for lab in labels])


def test_no_scores_no_labels_and_bad_values_are_skipped():
    image = _grey(100, 100)
    boxes = np.array([[10.0, 30.0, 60.0, 80.0]])
    plain = draw.annotate(image, boxes)
    assert not _is(plain[:30], draw.BOX_COLOUR).any()  # nothing above the box
    labels = draw.layout_labels(np.array([[np.nan, 0, 10, 10], [10, 10, 50, 50.0]]), np.array([0.9, np.nan]), (100, 100))
    assert labels == [None, None]
    wild = draw.annotate(image, np.array([[-1e30, -1e30, 1e30, 1e30]]), np.array([0.5]))
    assert wild.shape == image.shape
