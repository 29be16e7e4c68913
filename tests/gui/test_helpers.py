"""The viewer's Qt-free helpers, without a display."""

from __future__ import annotations

import numpy as np
import pytest

from zmqproc.gui.helpers import region_stats, result_rows, results_csv, shapes


def test_region_stats_in_the_images_own_values():
    gray = np.arange(100, dtype=np.uint16).reshape(10, 10) * 600
    (v,) = region_stats(gray, (2, 3, 4, 5))
    part = gray[3:8, 2:6]
    assert (v.name, v.minimum, v.maximum) == ("v", part.min(), part.max()) and v.mean == pytest.approx(part.mean())
    assert (v.low, v.high) == (part.min(), part.max()) and v.counts.sum() == 20
    floats = np.ones((4, 4, 3), np.float32)
    floats[0, 0, 1] = np.nan
    b, g, _ = region_stats(floats, None)
    assert g.counts.sum() == 15 and b.counts.sum() == 16, "NaN left out"
    (u8,) = region_stats(np.full((3, 3), 7, np.uint8), None, bins=256)
    assert (u8.low, u8.high) == (0.0, 255.0) and u8.counts[7] == 9


def test_each_drawn_row_links_to_its_overlay_in_drawing_order():
    results = {"faces": [[1, 2, 3, 4], [5, 6, 7, 8]], "count": 2, "eyes": [[9, 9, 1, 1]], "centres": [[1, 1]]}
    kinds = {"faces": "boxes", "eyes": "boxes", "centres": "points"}
    rows = result_rows(results, kinds)
    links = [link for _, link in rows]
    assert links == [None, ("boxes", 0), ("boxes", 1), None, None, ("boxes", 2), None, ("points", 0)]
    drawn = shapes(results, kinds)
    assert drawn["boxes"][2] == [9, 9, 1, 1], "a row's link is an index into what is drawn"
    assert results_csv({"count": 2, "faces": [[1, 2, 3, 4]]}) == 'key,index,value\ncount,,2\nfaces,0,"[1, 2, 3, 4]"\n'
