"""Count blobs (cells, colonies, stars, galaxies): threshold, split touching blobs, report each one's centroid and area."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import cv2
import numpy as np

from zmqproc import Range, op


@op(results={"centroids": "points"})
def count_blobs(
    image: np.ndarray,
    polarity: Annotated[Literal["bright", "dark"], "are the blobs brighter or darker than the background"] = "bright",
    min_area: Annotated[int, Range(1, 100_000), "smallest blob, in pixels"] = 20,
    split_touching: Annotated[bool, "separate touching blobs (distance transform and watershed)"] = True,
    draw: Annotated[bool, "also mark the centroids in the image (the viewer draws them over the image anyway)"] = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Find blobs by Otsu's threshold and count them; centroids (as points) and areas come back as results."""
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)
    flag = cv2.THRESH_BINARY if polarity == "bright" else cv2.THRESH_BINARY_INV
    _, mask = cv2.threshold(cv2.GaussianBlur(gray, (3, 3), 0), 0, 255, flag | cv2.THRESH_OTSU)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    labels = _split(gray, mask) if split_touching else cv2.connectedComponents(mask)[1]
    flat = labels.ravel()
    areas = np.bincount(flat)
    ys, xs = np.indices(labels.shape)
    sum_x, sum_y = np.bincount(flat, xs.ravel()), np.bincount(flat, ys.ravel())
    kept = [i for i in range(1, len(areas)) if areas[i] >= min_area]
    centroids = [[round(float(sum_x[i] / areas[i]), 1), round(float(sum_y[i] / areas[i]), 1)] for i in kept]
    found = {"count": len(kept), "centroids": centroids, "areas": [int(areas[i]) for i in kept]}
    if not draw:
        return image, found
    marked = image.copy() if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    color = (255, 0, 255, 255)[: marked.shape[2]]
    for x, y in centroids:
        cv2.drawMarker(marked, (round(x), round(y)), color, cv2.MARKER_CROSS, 9, 1)
    return marked, found


def _split(gray: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Labels 1..n with touching blobs separated: seeds where each blob is thickest, grown back by watershed."""
    distance = cv2.distanceTransform(mask, cv2.DIST_L2, 5)
    count, components = cv2.connectedComponents(mask)
    thickest = np.zeros(count, np.float32)
    np.maximum.at(thickest, components.ravel(), distance.ravel())
    seeds = ((distance > 0.6 * thickest[components]) & (components > 0)).astype(np.uint8)
    _, markers = cv2.connectedComponents(seeds)
    markers = markers + 1  # the background is 1, seeds 2..n+1, and what is neither (0) is grown into
    markers[(mask > 0) & (seeds == 0)] = 0
    labels = cv2.watershed(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), markers)
    return np.where(labels > 1, labels - 1, 0)
