"""The built-in operations: OpenCV functions declared with ``@op`` like any plugin (docs/plugins.md).

Besides the signature, each declares what the server's budget needs (``output``
rule, ``scratch`` memory, ``cost`` per input byte, see :class:`zmqproc.ops.Op`),
and its ``halo`` where tiles give exactly the whole image's result (checked by
tests/ops/test_tiling.py); those declaring none are never tiled.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Annotated, Any, Literal

import cv2
import numpy as np

from .declare import Range, op
from .registry import ALL_DTYPES, resized_shape, rotated_shape, shape_of

# --- helpers -----------------------------------------------------------------


def _channels(image: np.ndarray) -> int:
    return 1 if image.ndim == 2 else image.shape[2]


def _gray(image: np.ndarray) -> np.ndarray:
    c = _channels(image)
    if c == 1:
        return image.reshape(image.shape[:2])
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if c == 3 else cv2.COLOR_BGRA2GRAY)


def _bgr(image: np.ndarray) -> np.ndarray:
    c = _channels(image)
    if c == 3:
        return image
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR if c == 1 else cv2.COLOR_BGRA2BGR)


def _color_keep_alpha(fn: Callable[[np.ndarray], np.ndarray], image: np.ndarray) -> np.ndarray:
    """Apply ``fn`` (which takes 1 or 3 channels) to the colour part, keeping any alpha channel."""
    c = _channels(image)
    if c == 4:
        return np.dstack([fn(np.ascontiguousarray(image[:, :, :3])), image[:, :, 3]])
    return fn(image.reshape(image.shape[:2]) if c == 1 else image)


def _luma_only(fn: Callable[[np.ndarray], np.ndarray], image: np.ndarray) -> np.ndarray:
    """Apply a single-channel ``fn`` to grey images or to the lightness of colour ones."""

    def on_color(img: np.ndarray) -> np.ndarray:
        if img.ndim == 2:
            return fn(img)
        lab = cv2.cvtColor(img, cv2.COLOR_BGR2LAB)
        lab[:, :, 0] = fn(lab[:, :, 0])
        return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)

    return _color_keep_alpha(on_color, image)


def _sigma_radius(sigma: float) -> int:
    """The radius of the kernel cv2.GaussianBlur derives from ``sigma`` for uint8 images: ksize = cvRound(sigma*3*2 + 1) | 1."""
    return (round(sigma * 3 * 2 + 1) | 1) // 2


# float32: OpenCV's vector loops and their scalar tails round differently, so a pixel's last bits depend on its column.
_INTEGER_DTYPES = ("uint8", "uint16")


# --- the operations ------------------------------------------------------------


@op(dtypes=ALL_DTYPES, alias=True, scratch=0.0, cost=0.0, halo=0)
def identity(image: np.ndarray) -> np.ndarray:
    """Return the image unchanged."""
    return image


@op(dtypes=ALL_DTYPES, output="gray", scratch=0.0, cost=0.1, halo=0, tile_dtypes=_INTEGER_DTYPES)
def grayscale(image: np.ndarray) -> np.ndarray:
    """Convert to one grey channel."""
    return _gray(image)


@op(dtypes=("uint8", "uint16"), scratch=1.0, cost=0.1, halo=0)
def invert(image: np.ndarray) -> np.ndarray:
    """Photographic negative (alpha kept)."""
    return _color_keep_alpha(cv2.bitwise_not, image)


@op(
    dtypes=ALL_DTYPES,
    odd=["ksize"],
    scratch=0.5,
    cost=0.4,
    cost_param="ksize",
    halo=lambda p: p["ksize"] // 2,
    tile_dtypes=_INTEGER_DTYPES,
)
def gaussian_blur(
    image: np.ndarray,
    ksize: Annotated[int, Range(1, 99), "kernel size (odd)"] = 5,
    sigma: Annotated[float, Range(0.0, 100.0), "standard deviation; 0 = from ksize"] = 0.0,
) -> np.ndarray:
    """Gaussian blur."""
    return cv2.GaussianBlur(image, (ksize, ksize), sigma)


@op(odd=["ksize"], scratch=0.5, cost=1.1, cost_param="ksize", halo=lambda p: p["ksize"] // 2)
def median_blur(image: np.ndarray, ksize: Annotated[int, Range(3, 31), "aperture (odd)"] = 5) -> np.ndarray:
    """Median filter: removes salt-and-pepper noise."""
    return cv2.medianBlur(image, ksize)


# No halo: its result depends on the image's size. OpenCV runs Intel IPP's filter on images at least 16 pixels wide and
# its own code on narrower ones (1 apart at many pixels), and with several OpenCV threads IPP cuts a big image into
# stripes of rows that differ at their seams (tests/ops/test_tiling.py shows both).
@op(heavy=True, scratch=2.0, cost=25.0, cost_param="d")
def bilateral_filter(
    image: np.ndarray,
    d: Annotated[int, Range(1, 25), "pixel neighbourhood diameter"] = 9,
    sigma_color: Annotated[float, Range(1.0, 250.0)] = 75.0,
    sigma_space: Annotated[float, Range(1.0, 250.0)] = 75.0,
) -> np.ndarray:
    """Edge-preserving smoothing."""
    return _color_keep_alpha(lambda img: cv2.bilateralFilter(img, d, sigma_color, sigma_space), image)


@op(output="gray", scratch=10.0, cost=5.0)  # no halo: hysteresis follows an edge as far as it goes
def canny(
    image: np.ndarray,
    threshold1: Annotated[float, Range(0.0, 1000.0)] = 100.0,
    threshold2: Annotated[float, Range(0.0, 1000.0)] = 200.0,
    aperture: Annotated[Literal[3, 5, 7], "Sobel aperture"] = 3,
    l2_gradient: bool = False,
) -> np.ndarray:
    """Canny edge detector (one channel out)."""
    return cv2.Canny(_gray(image), threshold1, threshold2, apertureSize=aperture, L2gradient=l2_gradient)


@op(odd=["ksize"], output="gray", scratch=13.0, cost=2.5, halo=lambda p: max(1, p["ksize"] // 2))  # ksize 1: 3 taps
def sobel(image: np.ndarray, direction: Literal["x", "y", "both"] = "both", ksize: Annotated[int, Range(1, 7)] = 3) -> np.ndarray:
    """Sobel gradient magnitude (one channel out)."""
    gray = _gray(image)
    if direction != "both":
        return cv2.convertScaleAbs(cv2.Sobel(gray, cv2.CV_32F, int(direction == "x"), int(direction == "y"), ksize=ksize))
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=ksize)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=ksize)
    return cv2.convertScaleAbs(cv2.magnitude(gx, gy))


_THRESHOLD_TYPES = {
    "binary": cv2.THRESH_BINARY,
    "binary_inv": cv2.THRESH_BINARY_INV,
    "trunc": cv2.THRESH_TRUNC,
    "tozero": cv2.THRESH_TOZERO,
    "tozero_inv": cv2.THRESH_TOZERO_INV,
}


@op(output="gray", scratch=1.0, cost=0.2, halo=lambda p: None if p["method"] == "otsu" else 0)  # Otsu's level is the image's
def threshold(
    image: np.ndarray,
    method: Literal["fixed", "otsu"] = "fixed",
    thresh: Annotated[int, Range(0, 255), "level for method=fixed"] = 127,
    maxval: Annotated[int, Range(0, 255)] = 255,
    type: Literal["binary", "binary_inv", "trunc", "tozero", "tozero_inv"] = "binary",
) -> tuple[np.ndarray, dict[str, Any]]:
    """Threshold the grey image at a fixed level or at Otsu's level (reported in results)."""
    flags = _THRESHOLD_TYPES[type] | (cv2.THRESH_OTSU if method == "otsu" else 0)
    level, out = cv2.threshold(_gray(image), thresh, maxval, flags)
    return out, ({"otsu_threshold": float(level)} if method == "otsu" else {})


@op(scratch=3.0, cost=4.0)
def equalize_hist(image: np.ndarray) -> np.ndarray:
    """Histogram equalisation (of lightness for colour images)."""
    return _luma_only(cv2.equalizeHist, image)


@op(scratch=3.0, cost=6.0)
def clahe(
    image: np.ndarray,
    clip_limit: Annotated[float, Range(0.1, 40.0)] = 2.0,
    tile_grid: Annotated[int, Range(1, 64), "tiles per side"] = 8,
) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (of lightness for colour images)."""
    engine = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tile_grid, tile_grid))
    return _luma_only(engine.apply, image)


_INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "lanczos": cv2.INTER_LANCZOS4,
}


@op(dtypes=ALL_DTYPES, output="resize", scratch=0.0, cost=0.2)
def resize(
    image: np.ndarray,
    width: Annotated[int, Range(0, 16384)] = 0,
    height: Annotated[int, Range(0, 16384)] = 0,
    scale: Annotated[float, Range(0.01, 8.0)] = 0.5,
    interpolation: Literal["nearest", "linear", "cubic", "area", "lanczos"] = "area",
) -> np.ndarray:
    """Resize to width x height; a zero side follows the aspect ratio; both zero: scale."""
    h, w, _ = resized_shape(shape_of(image), {"width": width, "height": height, "scale": scale})
    return cv2.resize(image, (w, h), interpolation=_INTERPOLATIONS[interpolation])


_QUARTER_TURNS = {90: cv2.ROTATE_90_COUNTERCLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_CLOCKWISE}


@op(dtypes=ALL_DTYPES, output="rotate", scratch=0.0, cost=0.3)
def rotate(
    image: np.ndarray,
    angle: Annotated[float, Range(-360.0, 360.0)] = 90.0,
    expand: Annotated[bool, "grow the canvas to keep the whole image"] = True,
) -> np.ndarray:
    """Rotate counter-clockwise by an angle in degrees."""
    turn = angle % 360
    if turn == 0:
        return image
    if expand and turn in _QUARTER_TURNS:
        return cv2.rotate(image, _QUARTER_TURNS[int(turn)])
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    nh, nw, _ = rotated_shape(shape_of(image), {"angle": angle, "expand": expand})
    matrix[0, 2] += nw / 2 - w / 2
    matrix[1, 2] += nh / 2 - h / 2
    return cv2.warpAffine(image, matrix, (nw, nh))


_FLIPS = {"horizontal": 1, "vertical": 0, "both": -1}


@op(dtypes=ALL_DTYPES, scratch=0.0, cost=0.1)
def flip(image: np.ndarray, mode: Literal["horizontal", "vertical", "both"] = "horizontal") -> np.ndarray:
    """Mirror the image."""
    return cv2.flip(image, _FLIPS[mode])


@op(scratch=2.0, cost=1.0, halo=lambda p: _sigma_radius(p["sigma"]))
def sharpen(
    image: np.ndarray, amount: Annotated[float, Range(0.0, 5.0)] = 1.0, sigma: Annotated[float, Range(0.1, 10.0)] = 1.0
) -> np.ndarray:
    """Unsharp mask."""

    def unsharp(img: np.ndarray) -> np.ndarray:
        blurred = cv2.GaussianBlur(img, (0, 0), sigma)
        return cv2.addWeighted(img, 1.0 + amount, blurred, -amount, 0)

    return _color_keep_alpha(unsharp, image)


_SEPIA = np.array([[0.131, 0.534, 0.272], [0.168, 0.686, 0.349], [0.189, 0.769, 0.393]], dtype=np.float32)


@op(output="color", scratch=1.0, cost=0.3, halo=0)
def sepia(image: np.ndarray, intensity: Annotated[float, Range(0.0, 1.0)] = 1.0) -> np.ndarray:
    """Sepia tone (grey images become colour)."""

    def tone(img: np.ndarray) -> np.ndarray:
        bgr = _bgr(img)
        matrix = intensity * _SEPIA + (1.0 - intensity) * np.eye(3, dtype=np.float32)
        return cv2.transform(bgr, matrix)

    return _color_keep_alpha(tone, image)


@op(
    heavy=True,
    odd=["template_window", "search_window"],
    scratch=4.0,
    cost=500.0,
    cost_param="search_window",
    halo=lambda p: p["template_window"] // 2 + p["search_window"] // 2,  # templates compared across the search window
)
def denoise(
    image: np.ndarray,
    h: Annotated[float, Range(1.0, 30.0), "filter strength"] = 10.0,
    template_window: Annotated[int, Range(3, 21)] = 7,
    search_window: Annotated[int, Range(3, 35)] = 21,
) -> np.ndarray:
    """Non-local means denoising."""

    def nlmeans(img: np.ndarray) -> np.ndarray:
        if img.ndim == 2:
            return cv2.fastNlMeansDenoising(img, None, h, template_window, search_window)
        return cv2.fastNlMeansDenoisingColored(img, None, h, h, template_window, search_window)

    return _color_keep_alpha(nlmeans, image)


_cascades = threading.local()


def _face_cascade() -> cv2.CascadeClassifier:
    """One classifier per worker thread (detectMultiScale is not documented as thread-safe)."""
    cascade = getattr(_cascades, "face", None)
    if cascade is None:
        cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")  # type: ignore[attr-defined]
        if cascade.empty():
            raise RuntimeError("OpenCV's haarcascade_frontalface_default.xml did not load")
        _cascades.face = cascade
    return cascade


@op(heavy=True, scratch=3.0, cost=250.0, results={"faces": "boxes"})
def detect_faces(
    image: np.ndarray,
    scale_factor: Annotated[float, Range(1.01, 2.0)] = 1.1,
    min_neighbors: Annotated[int, Range(0, 50)] = 5,
    min_size: Annotated[int, Range(1, 2000), "smallest face side in pixels"] = 30,
    draw: Annotated[bool, "also draw the boxes into the image (the viewer draws them over it anyway)"] = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Find frontal faces (OpenCV's Haar cascade); boxes in results as [x, y, w, h], drawn into the image if asked."""
    found = _face_cascade().detectMultiScale(_gray(image), scale_factor, min_neighbors, minSize=(min_size, min_size))
    faces = [[int(v) for v in box] for box in found]
    if draw and faces:
        image = image.copy()
        color = (0, 255, 0, 255)[: _channels(image)] if _channels(image) > 1 else 255
        for x, y, w, h in faces:
            cv2.rectangle(image, (x, y), (x + w, y + h), color, max(2, image.shape[1] // 300))
    return image, {"faces": faces}
