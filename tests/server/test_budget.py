"""The memory budget on its own: sizes, the default, the split, and jobs sized from their ops' declarations."""

from __future__ import annotations

import pytest

from zmqproc import ops
from zmqproc.errors import TooLarge
from zmqproc.images import ImageDescriptor
from zmqproc.protocol import Step
from zmqproc.server.budget import BudgetPlan, MiB, check_fits, default_budget, estimate, parse_size

GiB = 1 << 30


@pytest.mark.parametrize(
    ("text", "size"), [("600M", 600 * MiB), ("4G", 4 * GiB), ("1.5g", 3 * GiB // 2), ("512k", 512 << 10), ("100", 100), ("2GiB", 2 * GiB)]
)
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "-1M", "0", "5X"])
def test_parse_size_refuses(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_default_is_80_percent_of_the_cgroup_limit_else_half_the_machine():
    assert default_budget(1 * GiB, 24 * GiB) == 1 * GiB * 4 // 5
    assert default_budget(None, 24 * GiB) == 12 * GiB
    assert default_budget(2**63, 24 * GiB) == 12 * GiB, "an unlimited cgroup reads as a huge number"


def test_split_leaves_the_jobs_what_the_processes_and_queued_payloads_do_not_take():
    plan = BudgetPlan.split(600 * MiB, baseline=100 * MiB, buffers=48 * MiB, max_frame_bytes=128 * MiB)
    assert plan.queued == (600 - 148) * MiB // 4 and plan.jobs == 452 * MiB - plan.queued
    assert "600 MiB" in plan.describe()
    with pytest.raises(ValueError, match="give it more"):
        BudgetPlan.split(120 * MiB, baseline=100 * MiB, buffers=10 * MiB, max_frame_bytes=MiB)


def job(shape, dtype, steps, fmt="raw", reply="raw", payload=None):
    desc = ImageDescriptor(fmt, dtype, shape)
    h, w, c = shape
    size = {"uint8": 1, "uint16": 2, "float32": 4}[dtype]
    return estimate(desc, payload or h * w * c * size, ops.validate_pipeline(steps), reply, 10**9)


def test_each_step_is_sized_from_its_declared_output_and_scratch():
    identity = job((100, 100, 3), "uint8", [Step("identity")])
    assert identity.peak == 30_000 * 2 and identity.reply == 30_000, "input and its raw reply; identity allocates nothing"
    gray = job((100, 100, 3), "uint8", [Step("grayscale")])
    assert gray.reply == 10_000
    grow = job((1, 1, 4), "float32", [Step("resize", {"width": 2000, "height": 1000})] * 2)
    assert grow.reply == 2000 * 1000 * 16 and grow.peak >= 2 * grow.reply, "the resized image and the reply copy"


def test_encoded_input_counts_its_decoded_pixels_and_the_decoder():
    small_file = job((4000, 4000, 4), "uint16", [Step("identity")], fmt="png", reply="png", payload=1000)
    assert small_file.peak > 4000 * 4000 * 4 * 2 * 2, "decoded pixels, then the encoder's buffer and its copy"


def test_a_step_over_the_pixel_limit_is_too_large_before_anything_runs():
    desc = ImageDescriptor("raw", "uint8", (10, 10, 3))
    with pytest.raises(TooLarge, match="resize would make 4000x4000"):
        estimate(desc, 300, ops.validate_pipeline([Step("resize", {"width": 4000, "height": 4000})]), "raw", 1_000_000)


def test_check_fits_names_the_figures():
    plan = BudgetPlan(600 * MiB, 100 * MiB, 48 * MiB, 100 * MiB, 352 * MiB)
    grow = job((1, 1, 4), "float32", [Step("resize", {"width": 6000, "height": 6000})])
    with pytest.raises(TooLarge, match="needs about 1099 MiB at its peak") as err:
        check_fits(grow, plan)
    assert err.value.details == {"limit": "memory_bytes", "value": grow.peak, "allowed": 352 * MiB}
    check_fits(job((100, 100, 3), "uint8", [Step("identity")]), plan)
