"""The operations registry: each op declares its parameters once.

Validation, the ``ops`` reply and the viewer's controls all come from these
declarations. An op takes an image (never modified in place: raw input is a
read-only view of the received frame) and returns a new image, or an image and
a dict of structured results.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from .errors import BadParams, TooLarge, UnknownOp
from .images import dtype_name
from .protocol import Limits, Step

DEFAULT_MAX_PIXELS = Limits().max_pixels


@dataclass(frozen=True, slots=True)
class Param:
    """One declared parameter: ``type`` is int, float, bool or choice."""

    type: str
    default: Any
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] | None = None
    odd: bool = False
    doc: str = ""

    def check(self, name: str, value: Any) -> Any:
        if self.type == "bool":
            if not isinstance(value, bool):
                raise BadParams(f"{name} must be true or false, got {value!r}")
            return value
        if self.type == "choice":  # exact: 3.0 is not the choice 3, True is not the choice 1
            if not any(type(value) is type(c) and value == c for c in self.choices or ()):
                raise BadParams(f"{name} must be one of {', '.join(map(str, self.choices or ()))}, got {value!r}")
            return value
        numeric = (int,) if self.type == "int" else (int, float)
        if isinstance(value, bool) or not isinstance(value, numeric):
            raise BadParams(f"{name} must be {'an integer' if self.type == 'int' else 'a number'}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):  # NaN passes every bounds check below
            raise BadParams(f"{name} must be a finite number, got {value}")
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise BadParams(f"{name} must be between {self.min} and {self.max}, got {value}")
        if self.odd and value % 2 == 0:
            raise BadParams(f"{name} must be odd, got {value}")
        return float(value) if self.type == "float" else value

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "default": self.default}
        if self.min is not None:
            out["min"] = self.min
        if self.max is not None:
            out["max"] = self.max
        if self.choices is not None:
            out["choices"] = list(self.choices)
        if self.odd:
            out["odd"] = True
        if self.doc:
            out["doc"] = self.doc
        return out


Shape = tuple[int, int, int]  # (height, width, channels); a 2-D image has 1 channel


@dataclass(frozen=True, slots=True)
class Op:
    """An operation and what it declares: parameters, dtypes, and what it costs.

    ``output`` names the rule (in :data:`OUTPUT_RULES`) by which the output's
    (height, width, channels) follows from the input's and the params; the
    dtype never changes. ``scratch`` is the op's working memory beside its input
    and output, in multiples of the output's bytes. ``cost`` is its CPU time in
    nanoseconds per input byte at the default params, growing in proportion to
    the param named ``cost_param``. ``heavy`` ops never run inline in the
    server's socket loop; ``alias`` ops return their input itself (no new memory).
    The server sizes every job from these before it runs (:mod:`zmqproc.budget`).
    """

    name: str
    doc: str
    fn: Callable[..., Any]
    params: dict[str, Param] = field(default_factory=dict)
    dtypes: tuple[str, ...] = ("uint8",)
    heavy: bool = False
    output: str = "same"
    scratch: float = 1.0
    cost: float = 1.0
    cost_param: str | None = None
    alias: bool = False

    def validate(self, params: dict[str, Any]) -> dict[str, Any]:
        """Defaults filled in, every value checked; unknown names are an error."""
        unknown = set(params) - set(self.params)
        if unknown:
            raise BadParams(f"{self.name} has no parameter {', '.join(sorted(unknown))}; it takes {', '.join(self.params) or 'none'}")
        return {name: p.check(name, params[name]) if name in params else p.default for name, p in self.params.items()}

    def output_shape(self, shape: Shape, params: dict[str, Any]) -> Shape:
        return OUTPUT_RULES[self.output](shape, params)

    def cost_ns(self, nbytes: int, params: dict[str, Any]) -> float:
        """Estimated CPU time on an input of ``nbytes``."""
        scale = 1.0
        if self.cost_param is not None:
            scale = max(1.0, params[self.cost_param] / self.params[self.cost_param].default)
        return self.cost * scale * nbytes

    def run(self, image: np.ndarray, params: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        if dtype_name(image) not in self.dtypes:
            raise BadParams(f"{self.name} takes {', '.join(self.dtypes)} images, not {image.dtype}")
        out = self.fn(image, **params)
        return out if isinstance(out, tuple) else (out, {})

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "doc": self.doc, "params": {n: p.to_wire() for n, p in self.params.items()}}


REGISTRY: dict[str, Op] = {}


def op(name: str, doc: str, **declared: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn`` as op ``name``: :class:`Param` keywords are its parameters, the others :class:`Op` fields."""
    params = {k: v for k, v in declared.items() if isinstance(v, Param)}
    fields = {k: v for k, v in declared.items() if not isinstance(v, Param)}

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        REGISTRY[name] = Op(name, doc, fn, params, **fields)
        return fn

    return register


def describe() -> list[dict[str, Any]]:
    """The ``ops`` reply: every op with its documented parameters."""
    return [o.to_wire() for o in REGISTRY.values()]


def validate_pipeline(steps: Sequence[Step]) -> list[tuple[Op, dict[str, Any]]]:
    """Resolve op names and check parameters before any work is queued."""
    resolved = []
    for step in steps:
        found = REGISTRY.get(step.op)
        if found is None:
            raise UnknownOp(f"unknown op {step.op!r}; ask for 'ops' to see the list")
        resolved.append((found, found.validate(step.params)))
    return resolved


def shape_of(image: np.ndarray) -> Shape:
    h, w = image.shape[:2]
    return h, w, 1 if image.ndim == 2 else image.shape[2]


def check_pixels(name: str, shape: Shape, max_pixels: int) -> None:
    h, w, _ = shape
    if h * w > max_pixels:
        raise TooLarge(f"{name} would make {w}x{h} = {w * h} pixels, the server's limit is {max_pixels}")


def run_pipeline(
    image: np.ndarray, pipeline: Sequence[tuple[Op, dict[str, Any]]], max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[np.ndarray, dict[str, Any]]:
    """Apply validated steps in order; results of all steps are merged; no step may make more than ``max_pixels``."""
    results: dict[str, Any] = {}
    for step_op, params in pipeline:
        check_pixels(step_op.name, step_op.output_shape(shape_of(image), params), max_pixels)
        image, found = step_op.run(image, params)
        results.update(found)
    return image, results


# --- how each op's output geometry follows from its input (Op.output names one) ---


def _resized(shape: Shape, params: dict[str, Any]) -> Shape:
    h, w, c = shape
    width, height, scale = params["width"], params["height"], params["scale"]
    if width == 0 and height == 0:
        width, height = round(w * scale), round(h * scale)
    elif width == 0:
        width = round(w * height / h)
    elif height == 0:
        height = round(h * width / w)
    return max(1, height), max(1, width), c


def _rotated(shape: Shape, params: dict[str, Any]) -> Shape:
    h, w, c = shape
    turn = params["angle"] % 360
    if not params["expand"] or turn == 0:
        return shape
    if turn in (90, 270):
        return w, h, c
    rad = math.radians(params["angle"])
    cos, sin = abs(math.cos(rad)), abs(math.sin(rad))
    return int(w * sin + h * cos + 0.5), int(h * sin + w * cos + 0.5), c


OUTPUT_RULES: dict[str, Callable[[Shape, dict[str, Any]], Shape]] = {
    "same": lambda shape, _: shape,
    "gray": lambda shape, _: (shape[0], shape[1], 1),
    "color": lambda shape, _: (shape[0], shape[1], 4 if shape[2] == 4 else 3),
    "resize": _resized,
    "rotate": _rotated,
}


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


ALL_DTYPES = ("uint8", "uint16", "float32")


# --- the operations ------------------------------------------------------------


@op("identity", "Return the image unchanged.", dtypes=ALL_DTYPES, alias=True, scratch=0.0, cost=0.0)
def identity(image: np.ndarray) -> np.ndarray:
    return image


@op("grayscale", "Convert to one grey channel.", dtypes=ALL_DTYPES, output="gray", scratch=0.0, cost=0.1)
def grayscale(image: np.ndarray) -> np.ndarray:
    return _gray(image)


@op("invert", "Photographic negative (alpha kept).", dtypes=("uint8", "uint16"), scratch=1.0, cost=0.1)
def invert(image: np.ndarray) -> np.ndarray:
    return _color_keep_alpha(cv2.bitwise_not, image)


@op(
    "gaussian_blur",
    "Gaussian blur.",
    dtypes=ALL_DTYPES,
    scratch=0.5,
    cost=0.4,
    cost_param="ksize",
    ksize=Param("int", 5, 1, 99, odd=True, doc="kernel size (odd)"),
    sigma=Param("float", 0.0, 0.0, 100.0, doc="standard deviation; 0 = from ksize"),
)
def gaussian_blur(image: np.ndarray, ksize: int, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(image, (ksize, ksize), sigma)


@op(
    "median_blur",
    "Median filter: removes salt-and-pepper noise.",
    scratch=0.5,
    cost=1.1,
    cost_param="ksize",
    ksize=Param("int", 5, 3, 31, odd=True, doc="aperture (odd)"),
)
def median_blur(image: np.ndarray, ksize: int) -> np.ndarray:
    return cv2.medianBlur(image, ksize)


@op(
    "bilateral_filter",
    "Edge-preserving smoothing.",
    heavy=True,
    scratch=2.0,
    cost=25.0,
    cost_param="d",
    d=Param("int", 9, 1, 25, doc="pixel neighbourhood diameter"),
    sigma_color=Param("float", 75.0, 1.0, 250.0),
    sigma_space=Param("float", 75.0, 1.0, 250.0),
)
def bilateral_filter(image: np.ndarray, d: int, sigma_color: float, sigma_space: float) -> np.ndarray:
    return _color_keep_alpha(lambda img: cv2.bilateralFilter(img, d, sigma_color, sigma_space), image)


@op(
    "canny",
    "Canny edge detector (one channel out).",
    output="gray",
    scratch=10.0,
    cost=5.0,
    threshold1=Param("float", 100.0, 0.0, 1000.0),
    threshold2=Param("float", 200.0, 0.0, 1000.0),
    aperture=Param("choice", 3, choices=(3, 5, 7), doc="Sobel aperture"),
    l2_gradient=Param("bool", False),
)
def canny(image: np.ndarray, threshold1: float, threshold2: float, aperture: int, l2_gradient: bool) -> np.ndarray:
    return cv2.Canny(_gray(image), threshold1, threshold2, apertureSize=aperture, L2gradient=l2_gradient)


@op(
    "sobel",
    "Sobel gradient magnitude (one channel out).",
    output="gray",
    scratch=13.0,
    cost=2.5,
    direction=Param("choice", "both", choices=("x", "y", "both")),
    ksize=Param("int", 3, 1, 7, odd=True),
)
def sobel(image: np.ndarray, direction: str, ksize: int) -> np.ndarray:
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


@op(
    "threshold",
    "Threshold the grey image at a fixed level or at Otsu's level (reported in results).",
    output="gray",
    scratch=1.0,
    cost=0.2,
    method=Param("choice", "fixed", choices=("fixed", "otsu")),
    thresh=Param("int", 127, 0, 255, doc="level for method=fixed"),
    maxval=Param("int", 255, 0, 255),
    type=Param("choice", "binary", choices=tuple(_THRESHOLD_TYPES)),
)
def threshold(image: np.ndarray, method: str, thresh: int, maxval: int, type: str) -> tuple[np.ndarray, dict[str, Any]]:
    flags = _THRESHOLD_TYPES[type] | (cv2.THRESH_OTSU if method == "otsu" else 0)
    level, out = cv2.threshold(_gray(image), thresh, maxval, flags)
    return out, ({"otsu_threshold": float(level)} if method == "otsu" else {})


@op("equalize_hist", "Histogram equalisation (of lightness for colour images).", scratch=3.0, cost=4.0)
def equalize_hist(image: np.ndarray) -> np.ndarray:
    return _luma_only(cv2.equalizeHist, image)


@op(
    "clahe",
    "Contrast-limited adaptive histogram equalisation (of lightness for colour images).",
    scratch=3.0,
    cost=6.0,
    clip_limit=Param("float", 2.0, 0.1, 40.0),
    tile_grid=Param("int", 8, 1, 64, doc="tiles per side"),
)
def clahe(image: np.ndarray, clip_limit: float, tile_grid: int) -> np.ndarray:
    engine = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tile_grid, tile_grid))
    return _luma_only(engine.apply, image)


_INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "lanczos": cv2.INTER_LANCZOS4,
}


@op(
    "resize",
    "Resize to width x height; a zero side follows the aspect ratio; both zero: scale.",
    dtypes=ALL_DTYPES,
    output="resize",
    scratch=0.0,
    cost=0.2,
    width=Param("int", 0, 0, 16384),
    height=Param("int", 0, 0, 16384),
    scale=Param("float", 0.5, 0.01, 8.0),
    interpolation=Param("choice", "area", choices=tuple(_INTERPOLATIONS)),
)
def resize(image: np.ndarray, width: int, height: int, scale: float, interpolation: str) -> np.ndarray:
    h, w, _ = _resized(shape_of(image), {"width": width, "height": height, "scale": scale})
    return cv2.resize(image, (w, h), interpolation=_INTERPOLATIONS[interpolation])


_QUARTER_TURNS = {90: cv2.ROTATE_90_COUNTERCLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_CLOCKWISE}


@op(
    "rotate",
    "Rotate counter-clockwise by an angle in degrees.",
    dtypes=ALL_DTYPES,
    output="rotate",
    scratch=0.0,
    cost=0.3,
    angle=Param("float", 90.0, -360.0, 360.0),
    expand=Param("bool", True, doc="grow the canvas to keep the whole image"),
)
def rotate(image: np.ndarray, angle: float, expand: bool) -> np.ndarray:
    turn = angle % 360
    if turn == 0:
        return image
    if expand and turn in _QUARTER_TURNS:
        return cv2.rotate(image, _QUARTER_TURNS[int(turn)])
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    nh, nw, _ = _rotated(shape_of(image), {"angle": angle, "expand": expand})
    matrix[0, 2] += nw / 2 - w / 2
    matrix[1, 2] += nh / 2 - h / 2
    return cv2.warpAffine(image, matrix, (nw, nh))


_FLIPS = {"horizontal": 1, "vertical": 0, "both": -1}


@op("flip", "Mirror the image.", dtypes=ALL_DTYPES, scratch=0.0, cost=0.1, mode=Param("choice", "horizontal", choices=tuple(_FLIPS)))
def flip(image: np.ndarray, mode: str) -> np.ndarray:
    return cv2.flip(image, _FLIPS[mode])


@op(
    "sharpen",
    "Unsharp mask.",
    scratch=2.0,
    cost=1.0,
    amount=Param("float", 1.0, 0.0, 5.0),
    sigma=Param("float", 1.0, 0.1, 10.0),
)
def sharpen(image: np.ndarray, amount: float, sigma: float) -> np.ndarray:
    def unsharp(img: np.ndarray) -> np.ndarray:
        blurred = cv2.GaussianBlur(img, (0, 0), sigma)
        return cv2.addWeighted(img, 1.0 + amount, blurred, -amount, 0)

    return _color_keep_alpha(unsharp, image)


_SEPIA = np.array([[0.131, 0.534, 0.272], [0.168, 0.686, 0.349], [0.189, 0.769, 0.393]], dtype=np.float32)


@op("sepia", "Sepia tone (grey images become colour).", output="color", scratch=1.0, cost=0.3, intensity=Param("float", 1.0, 0.0, 1.0))
def sepia(image: np.ndarray, intensity: float) -> np.ndarray:
    def tone(img: np.ndarray) -> np.ndarray:
        bgr = _bgr(img)
        matrix = intensity * _SEPIA + (1.0 - intensity) * np.eye(3, dtype=np.float32)
        return cv2.transform(bgr, matrix)

    return _color_keep_alpha(tone, image)


@op(
    "denoise",
    "Non-local means denoising.",
    heavy=True,
    scratch=4.0,
    cost=500.0,
    cost_param="search_window",
    h=Param("float", 10.0, 1.0, 30.0, doc="filter strength"),
    template_window=Param("int", 7, 3, 21, odd=True),
    search_window=Param("int", 21, 3, 35, odd=True),
)
def denoise(image: np.ndarray, h: float, template_window: int, search_window: int) -> np.ndarray:
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


@op(
    "detect_faces",
    "Find frontal faces (OpenCV's Haar cascade); boxes in results as [x, y, w, h], drawn if asked.",
    heavy=True,
    scratch=3.0,
    cost=250.0,
    scale_factor=Param("float", 1.1, 1.01, 2.0),
    min_neighbors=Param("int", 5, 0, 50),
    min_size=Param("int", 30, 1, 2000, doc="smallest face side in pixels"),
    draw=Param("bool", True, doc="draw the boxes on the image"),
)
def detect_faces(
    image: np.ndarray, scale_factor: float, min_neighbors: int, min_size: int, draw: bool
) -> tuple[np.ndarray, dict[str, Any]]:
    found = _face_cascade().detectMultiScale(_gray(image), scale_factor, min_neighbors, minSize=(min_size, min_size))
    faces = [[int(v) for v in box] for box in found]
    if draw and faces:
        image = image.copy()
        color = (0, 255, 0, 255)[: _channels(image)] if _channels(image) > 1 else 255
        for x, y, w, h in faces:
            cv2.rectangle(image, (x, y), (x + w, y + h), color, max(2, image.shape[1] // 300))
    return image, {"faces": faces}
