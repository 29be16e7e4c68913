"""The one table of image formats: what each is called on the wire and on disk, what pixels it holds, who makes it.

Every place that knows formats reads this table: the protocol (which ``reply_format`` a server encodes), :mod:`images`
(sniffing, sizing, encoding), the command line (which output files the server encodes), the viewer's open and save
dialogs and its batch. Adding a format is a row here (and its header reader in :mod:`images`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RAW_DTYPES = ("uint8", "uint16", "float32")  # the pixel types that travel raw


@dataclass(frozen=True, slots=True)
class Format:
    """One encoded format: ``name`` on the wire, ``label`` for people, ``suffixes`` on disk (the first is written)."""

    name: str
    label: str
    suffixes: tuple[str, ...]
    dtypes: tuple[str, ...]  # the pixel types a file of it holds without OpenCV converting them
    server_encodes: bool  # a server answers it as a ``reply_format`` (else a client writes the file from raw pixels)

    @property
    def suffix(self) -> str:
        return self.suffixes[0]


TABLE = (
    Format("png", "PNG", (".png",), ("uint8", "uint16"), True),
    Format("jpeg", "JPEG", (".jpg", ".jpeg"), ("uint8",), True),
    Format("webp", "WebP", (".webp",), ("uint8",), True),
    Format("bmp", "BMP", (".bmp",), ("uint8",), False),
    Format("tiff", "TIFF", (".tiff", ".tif"), RAW_DTYPES, False),
)
BY_NAME = {f.name: f for f in TABLE}
BY_SUFFIX = {suffix: f for f in TABLE for suffix in f.suffixes}
ENCODED_FORMATS = tuple(f.name for f in TABLE)  # every format a request's image may be sent in, besides raw
FORMATS = ("raw", *ENCODED_FORMATS)
REPLY_FORMATS = ("raw", *(f.name for f in TABLE if f.server_encodes))
SUFFIXES = frozenset(BY_SUFFIX)  # the files the viewer and the command line read and write


def images_in(folder: Path) -> list[Path]:
    """The image files in ``folder`` (by their suffix), by name."""
    return sorted(f for f in folder.iterdir() if f.suffix.lower() in SUFFIXES)


def for_path(name: str) -> Format | None:
    """The format a file name's suffix says (case-insensitive), or None."""
    dot = name.rfind(".")
    return BY_SUFFIX.get(name[dot:].lower()) if dot >= 0 else None
