"""Colour quantisation by k-means: the image in ``colors`` colours, and the palette (with each colour's share) as results."""

from __future__ import annotations

from typing import Annotated, Any

import cv2
import numpy as np

from zmqproc import Range, op


@op(heavy=True)
def quantize(
    image: np.ndarray,
    colors: Annotated[int, Range(2, 32), "how many colours"] = 8,
    attempts: Annotated[int, Range(1, 10), "k-means restarts; the best is kept"] = 3,
    seed: Annotated[int, Range(0, 2**31 - 1), "random seed (the same seed gives the same result)"] = 1,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Reduce the image to its `colors` most representative colours (k-means in BGR); the palette comes back as results."""
    pixels = image.reshape(-1, 1 if image.ndim == 2 else image.shape[2]).astype(np.float32)
    k = min(colors, len(np.unique(pixels, axis=0)))
    cv2.setRNGSeed(seed)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    _, labels, centers = cv2.kmeans(pixels, k, None, criteria, attempts, cv2.KMEANS_PP_CENTERS)
    palette = np.clip(np.rint(centers), 0, 255).astype(np.uint8)
    out = palette[labels.ravel()].reshape(image.shape)
    counts = np.bincount(labels.ravel(), minlength=k)
    order = np.argsort(-counts)
    share = [round(float(counts[i]) / len(labels), 4) for i in order]
    return out, {"palette": [palette[i].tolist() for i in order], "share": share}
