"""The sample photos ship with the package and open by name."""

from __future__ import annotations

import cv2
import pytest

from zmqproc import samples


@pytest.mark.parametrize("name", samples.names())
def test_every_sample_is_a_readable_photo_with_its_license(name):
    image = cv2.imread(str(samples.path(name)))
    assert image is not None and image.ndim == 3 and min(image.shape[:2]) >= 300
    assert samples.path(name).name in (samples.FOLDER / "LICENSES.md").read_text()


def test_resolve_maps_sample_names_and_leaves_paths_alone():
    assert samples.resolve("sample:coffee") == str(samples.FOLDER / "coffee.png")
    assert samples.resolve("photos/cat.png") == "photos/cat.png"
    with pytest.raises(ValueError, match="astronaut"):  # the message names what exists
        samples.resolve("sample:kitten")
