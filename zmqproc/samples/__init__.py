"""Sample photos shipped with the package: ``sample:NAME`` opens one in the CLI and the viewer (File → Open sample).

Their licenses are in ``LICENSES.md`` beside them (public domain or CC0).
"""

from __future__ import annotations

from pathlib import Path

SCHEME = "sample:"
FOLDER = Path(__file__).resolve().parent
SAMPLES: dict[str, tuple[str, str]] = {  # name -> (file, what it shows)
    "astronaut": ("astronaut.png", "portrait with one face (try detect_faces)"),
    "chelsea": ("chelsea.png", "a cat"),
    "coffee": ("coffee.png", "a coffee cup"),
    "hubble_deep_field": ("hubble_deep_field.jpg", "many small galaxies"),
    "rocket": ("rocket.jpg", "a launch, high contrast"),
}


def names() -> list[str]:
    return list(SAMPLES)


def path(name: str) -> Path:
    """The file of sample ``name``; ValueError naming the samples for an unknown one."""
    try:
        return FOLDER / SAMPLES[name][0]
    except KeyError:
        raise ValueError(f"no sample named {name!r}; the samples are {', '.join(SAMPLES)}") from None


def resolve(spec: str) -> str:
    """A file path as given, or the file of ``sample:NAME``."""
    return str(path(spec[len(SCHEME) :])) if spec.startswith(SCHEME) else spec
