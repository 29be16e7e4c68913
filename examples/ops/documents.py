"""Find a document or card: the largest convex quadrilateral, returned as a polygon (drawn if asked), or cut out flat."""

from __future__ import annotations

from typing import Annotated, Any

import cv2
import numpy as np

from zmqproc import Range, op


@op(results={"document": "polygons"})
def find_document(
    image: np.ndarray,
    min_area: Annotated[float, Range(0.01, 0.95), "smallest document, as a share of the image"] = 0.1,
    flatten: Annotated[bool, "return the document cut out and straightened instead of the image"] = False,
    draw: Annotated[bool, "also draw the outline into the image (the viewer draws it over the image anyway)"] = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Find the largest four-cornered shape (a page, a card, a screen); its corners come back as a polygon."""
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)
    edges = cv2.dilate(cv2.Canny(cv2.GaussianBlur(gray, (5, 5), 0), 50, 150), np.ones((3, 3), np.uint8))
    contours, _ = cv2.findContours(edges, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    best, best_area = None, min_area * gray.size
    for contour in contours:
        quad = cv2.approxPolyDP(contour, 0.02 * cv2.arcLength(contour, True), True)
        area = cv2.contourArea(quad)
        if len(quad) == 4 and cv2.isContourConvex(quad) and area > best_area:
            best, best_area = quad.reshape(4, 2), area
    if best is None:
        return image, {"document": []}
    corners = _clockwise_from_top_left(best)
    if flatten:
        return _flattened(image, corners), {"document": [corners.tolist()]}
    if not draw:
        return image, {"document": [corners.tolist()]}
    marked = image.copy() if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    color = (0, 200, 255, 255)[: marked.shape[2]]
    cv2.polylines(marked, [corners.astype(np.int32)], True, color, max(2, image.shape[1] // 300))
    return marked, {"document": [corners.tolist()]}


def _clockwise_from_top_left(quad: np.ndarray) -> np.ndarray:
    sums, diffs = quad.sum(axis=1), np.diff(quad, axis=1).ravel()
    return np.array([quad[np.argmin(sums)], quad[np.argmin(diffs)], quad[np.argmax(sums)], quad[np.argmax(diffs)]], np.int32)


def _flattened(image: np.ndarray, corners: np.ndarray) -> np.ndarray:
    tl, tr, br, bl = corners.astype(np.float32)
    width = round(max(np.linalg.norm(tr - tl), np.linalg.norm(br - bl)))
    height = round(max(np.linalg.norm(bl - tl), np.linalg.norm(br - tr)))
    target = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], np.float32)
    return cv2.warpPerspective(image, cv2.getPerspectiveTransform(corners.astype(np.float32), target), (width, height))
