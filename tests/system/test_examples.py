"""The example plugin ops in examples/ops: they load, declare what the docs say, and compute the right thing."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import cv2
import numpy as np
import pytest

from tests.conftest import ROOT, load_image
from zmqproc import ops
from zmqproc.ops import plugins

EXAMPLES = ROOT / "examples" / "ops"


@pytest.fixture(scope="module")
def examples() -> Iterator[dict[str, object]]:
    """The example modules loaded as the server loads them; their functions by op name."""
    before, modules, loaded = dict(ops.REGISTRY), set(sys.modules), plugins._loaded
    plugins._loaded = {"specs": [], "entry_points": False}
    added = plugins.load([str(EXAMPLES)], entry_points=False)
    yield {name: ops.REGISTRY[name].fn for name in added}
    plugins._loaded = loaded
    ops.REGISTRY.clear()
    ops.REGISTRY.update(before)
    for name in set(sys.modules) - modules:
        del sys.modules[name]


def card_scene(angle: float = 14.0) -> tuple[np.ndarray, np.ndarray]:
    """A light card on a noisy dark desk; the card's true corners."""
    rng = np.random.default_rng(5)
    scene = rng.integers(20, 90, (480, 640, 3), dtype=np.uint8)
    scene = cv2.GaussianBlur(scene, (7, 7), 0)
    corners = cv2.boxPoints(((330, 250), (300, 190), angle)).astype(np.int32)
    cv2.fillConvexPoly(scene, corners, (235, 230, 225))
    cv2.putText(scene, "ZMQPROC", (250, 260), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (40, 40, 40), 3)
    return scene, corners


def test_the_examples_load_with_their_declared_schema(examples):
    assert set(examples) == {"quantize", "find_document", "count_blobs"}
    wire = {o["name"]: o for o in ops.describe()}
    assert wire["count_blobs"]["params"]["polarity"] == {
        "type": "choice", "default": "bright", "choices": ["bright", "dark"], "doc": "are the blobs brighter or darker than the background"
    }  # fmt: skip
    assert wire["find_document"]["results"] == {"document": "polygons"} and wire["count_blobs"]["results"] == {"centroids": "points"}
    assert all(wire[name]["source"].startswith(str(EXAMPLES)) for name in examples)


def test_quantize_keeps_only_its_palette_and_reports_it(examples):
    coffee = load_image("coffee.png")
    out, found = examples["quantize"](coffee, colors=6)
    assert out.shape == coffee.shape and out.dtype == np.uint8
    assert {tuple(c) for c in out.reshape(-1, 3)} == {tuple(c) for c in found["palette"]} and len(found["palette"]) == 6
    assert abs(sum(found["share"]) - 1) < 1e-3 and found["share"] == sorted(found["share"], reverse=True)
    again, _ = examples["quantize"](coffee, colors=6)
    assert np.array_equal(out, again), "the same seed gives the same result"
    assert np.abs(out.astype(int) - coffee).mean() < 20, "six colours still resemble the photo"


@pytest.mark.parametrize("angle", [0.0, 14.0, -30.0])
def test_find_document_finds_the_cards_corners(examples, angle):
    scene, truth = card_scene(angle)
    same, found = examples["find_document"](scene)
    (corners,) = found["document"]
    distances = [min(np.hypot(*(np.array(c) - t)) for c in corners) for t in truth]
    assert len(corners) == 4 and max(distances) < 8, (corners, truth.tolist())
    assert np.array_equal(same, scene), "by default the outline is a result only"
    marked, again = examples["find_document"](scene, draw=True)
    assert again == found and marked.shape == scene.shape and not np.array_equal(marked, scene), "drawn when asked"
    flat, _ = examples["find_document"](scene, flatten=True)
    assert sorted(flat.shape[:2]) == pytest.approx([190, 300], abs=10), "cut out and straightened"


def test_find_document_reports_nothing_on_a_photo_without_one(examples):
    out, found = examples["find_document"](load_image("astronaut.png"), min_area=0.5)
    assert found == {"document": []} and np.array_equal(out, load_image("astronaut.png"))


def test_count_blobs_counts_separate_and_touching_blobs(examples):
    image = np.zeros((300, 400), np.uint8)
    centers = [(40, 40), (120, 50), (200, 40), (300, 60), (60, 150), (150, 160), (260, 170), (350, 150), (80, 250)]
    for x, y in centers:
        cv2.circle(image, (x, y), 14, 220, -1)
    cv2.circle(image, (230, 250), 16, 220, -1)  # two discs that touch: one blob to a threshold, two to the counter
    cv2.circle(image, (258, 250), 16, 220, -1)
    _, found = examples["count_blobs"](image, min_area=50)
    assert found["count"] == len(centers) + 2 == len(found["centroids"]) == len(found["areas"])
    for x, y in centers:
        assert min(np.hypot(cx - x, cy - y) for cx, cy in found["centroids"]) < 2
    _, merged = examples["count_blobs"](image, min_area=50, split_touching=False)
    assert merged["count"] == len(centers) + 1
    _, inverted = examples["count_blobs"](255 - image, polarity="dark", min_area=50)
    assert inverted["count"] == found["count"]


def test_count_blobs_on_the_deep_field_finds_galaxies(examples):
    _, found = examples["count_blobs"](load_image("hubble_deep_field.jpg"), min_area=10)
    assert found["count"] > 50
