"""Issue 20, row 4: 16-bit and alpha kept end to end in both transfer modes; an op that cannot take the pixel type says so
in those words, before anything is sent."""

from __future__ import annotations

import cv2
import numpy as np


def run(qtbot, win):
    with qtbot.waitSignal(win.jobFinished, timeout=20000) as job:
        win.process()
    assert job.args[0], job.args
    return win.result


def test_16_bit_and_alpha_survive_both_transfer_modes_and_give_the_same_result(qtbot, make_window, endpoint, tmp_path):
    rng = np.random.default_rng(4)
    deep = rng.integers(0, 65536, (60, 80, 3), dtype=np.uint16)
    clear = rng.integers(0, 256, (60, 80, 4), dtype=np.uint8)
    clear[:, :40, 3] = 0  # half transparent
    files = {"deep.png": deep, "clear.png": clear}
    for name, image in files.items():
        cv2.imwrite(str(tmp_path / name), image)
    win = make_window(endpoint)
    qtbot.waitUntil(lambda: bool(win.ops), timeout=10000)
    win.editor.set_steps("invert")
    results = {}
    for mode in ("raw", "encoded"):
        win.transfer.setCurrentIndex(win.transfer.findData(mode))
        for name, image in files.items():
            win.open_files([str(tmp_path / name)])
            assert win.original.dtype == image.dtype and win.original.shape == image.shape and np.array_equal(win.original, image)
            results[mode, name] = run(qtbot, win)
            assert results[mode, name].dtype == image.dtype and results[mode, name].shape == image.shape, (mode, name)
    for name in files:
        assert np.array_equal(results["raw", name], results["encoded", name]), f"{name}: local and SSH users see the same"
    assert np.array_equal(results["raw", "deep.png"], 65535 - deep)


def test_an_op_that_cannot_take_the_pixel_type_says_so_before_sending(qtbot, make_window, endpoint, tmp_path):
    cv2.imwrite(str(tmp_path / "deep.png"), np.full((20, 30), 40000, np.uint16))
    win = make_window(endpoint)
    qtbot.waitUntil(lambda: bool(win.ops), timeout=10000)
    win.open_files([str(tmp_path / "deep.png")])
    win.editor.set_steps("clahe")
    win.process()
    assert win.notice.text() == "Step 1 (clahe) works on uint8 images; this one is uint16. Convert it first, or choose another op."
    assert win.client.in_flight == 0 and win._job is None, "nothing was sent"


def test_a_16_bit_result_is_saved_without_loss_or_refused_in_words(qtbot, make_window, endpoint, tmp_path):
    deep = np.random.default_rng(9).integers(0, 65536, (20, 30), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    win = make_window(endpoint)
    qtbot.waitUntil(lambda: bool(win.ops), timeout=10000)
    win.open_files([str(tmp_path / "deep.png")])
    win.editor.set_steps("invert")
    run(qtbot, win)
    assert win.save_result(str(tmp_path / "out.jpg")) is None
    assert win.notice.text() == "JPEG cannot hold this uint16 result without loss: save it as .png or .tiff."
    saved = win.save_result(str(tmp_path / "out.png"))
    assert saved is not None and np.array_equal(cv2.imread(saved, cv2.IMREAD_UNCHANGED), 65535 - deep)
