"""The command line as a user runs it: real processes, one clear line on errors, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import zmq

from tests.conftest import IMAGES, ROOT, free_port


def zmqproc(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zmqproc", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def assert_one_clear_line(out: subprocess.CompletedProcess[str]) -> None:
    assert out.returncode != 0
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


@pytest.mark.parametrize(("suffix", "magic"), [(".png", b"\x89PNG"), (".jpg", b"\xff\xd8"), (".webp", b"RIFF"), (".bmp", b"BM")])
def test_process_writes_the_result(endpoint, tmp_path, suffix, magic):
    out_path = tmp_path / f"out{suffix}"
    out = zmqproc(
        "process",
        str(IMAGES / "chelsea.png"),
        "-o",
        str(out_path),
        "--op",
        "grayscale",
        "--op",
        "flip:mode=horizontal",
        "--server",
        endpoint,
    )
    assert out.returncode == 0, out.stderr
    assert out_path.read_bytes()[:4].startswith(magic) and "wrote" in out.stdout
    if suffix in (".png", ".bmp"):
        original = cv2.imread(str(IMAGES / "chelsea.png"))
        expected = cv2.flip(cv2.cvtColor(original, cv2.COLOR_BGR2GRAY), 1)
        assert np.array_equal(cv2.imread(str(out_path), cv2.IMREAD_UNCHANGED), expected)


def test_process_a_named_sample_reports_results(endpoint, tmp_path):
    out = zmqproc("process", "sample:astronaut", "-o", str(tmp_path / "f.jpg"), "--op", "detect_faces", "--server", endpoint)
    assert out.returncode == 0 and "faces=[[" in out.stdout
    listing = zmqproc("samples")
    assert listing.returncode == 0 and "sample:astronaut" in listing.stdout and str(IMAGES / "astronaut.png") in listing.stdout
    assert_one_clear_line(zmqproc("process", "sample:nope", "-o", str(tmp_path / "x.png"), "--server", endpoint))


def test_long_results_are_summed_up_on_the_line_and_written_whole_as_json(start_server, tmp_path):
    server = start_server("--workers", "1", "--ops", str(ROOT / "examples" / "ops"))
    found = tmp_path / "found.json"
    out = zmqproc(
        "process",
        "sample:hubble_deep_field",
        "-o",
        str(tmp_path / "b.png"),
        "--op",
        "count_blobs",
        "--server",
        server.endpoint,
        "--results",
        str(found),
    )
    results = json.loads(found.read_text())
    assert out.returncode == 0 and f"count={results['count']}" in out.stdout
    assert f"centroids: {len(results['centroids'])} points" in out.stdout and len(out.stdout) < 200
    piped = zmqproc(
        "process",
        "sample:hubble_deep_field",
        "-o",
        str(tmp_path / "c.png"),
        "--op",
        "count_blobs",
        "--server",
        server.endpoint,
        "--results",
        "-",
    )
    assert json.loads(piped.stdout) == results, "stdout holds the JSON alone (the summary goes to stderr)"


def test_ping_ops_stats(endpoint, server):
    ping = zmqproc("ping", "--server", endpoint)
    assert ping.returncode == 0 and "ms" in ping.stdout and server.epoch in ping.stdout
    listing = zmqproc("ops", "--server", endpoint)
    assert listing.returncode == 0
    assert "gaussian_blur" in listing.stdout and "ksize=5 [1..99, odd]" in listing.stdout and "{fixed|otsu}" in listing.stdout
    stats = zmqproc("stats", "--server", endpoint)
    assert stats.returncode == 0 and "queue_length" in stats.stdout


def test_check_port_open_then_ping(endpoint):
    host, port = endpoint.removeprefix("tcp://").split(":")
    out = zmqproc("check-port", host, port)
    assert out.returncode == 0 and "tcp open" in out.stdout and "zmqproc ping" in out.stdout


def test_check_port_closed():
    out = zmqproc("check-port", "127.0.0.1", str(free_port()))
    assert out.returncode == 1 and "tcp closed" in out.stdout


def test_check_port_open_but_not_zmqproc():
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    try:
        out = zmqproc("check-port", "127.0.0.1", str(listener.getsockname()[1]), "--timeout", "1")
    finally:
        listener.close()
    assert out.returncode == 1 and "tcp open" in out.stdout and "no zmqproc reply" in out.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--op", "nope"], "unknown_op"),
        (["--op", "gaussian_blur:ksize=2"], "bad_params"),
        (["--op", "gaussian_blur:ksize"], "key=value"),
    ],
)
def test_user_mistakes_are_one_line(endpoint, tmp_path, args, needle):
    out = zmqproc("process", str(IMAGES / "coffee.png"), "-o", str(tmp_path / "o.png"), *args, "--server", endpoint)
    assert_one_clear_line(out)
    assert needle in out.stderr


def test_missing_input_and_unreadable_input(endpoint, tmp_path):
    assert_one_clear_line(zmqproc("process", str(tmp_path / "missing.png"), "-o", str(tmp_path / "o.png"), "--server", endpoint))
    (tmp_path / "text.png").write_text("hello")
    out = zmqproc("process", str(tmp_path / "text.png"), "-o", str(tmp_path / "o.png"), "--server", endpoint)
    assert_one_clear_line(out)
    assert "not a png" in out.stderr


@pytest.mark.parametrize("name", ["empty.jpg", "header-cut.png", "bomb.png", "float64.tiff"])
def test_a_broken_or_bomb_input_is_one_line_before_anything_is_sent(endpoint, tmp_path, name):
    from tests.hostile import client_side_files

    data, words = client_side_files()[name]
    (tmp_path / name).write_bytes(data)
    out = zmqproc("process", str(tmp_path / name), "-o", str(tmp_path / "o.png"), "--server", endpoint)
    assert_one_clear_line(out)
    assert f"{name}: {words}" in out.stderr or words in out.stderr


def test_no_server_is_one_line_after_the_timeout():
    out = zmqproc("ping", "--server", f"tcp://127.0.0.1:{free_port()}", "--timeout", "0.5")
    assert_one_clear_line(out)
    assert "no reply" in out.stderr


def test_a_gone_server_fails_within_the_grace_not_the_timeout():
    started = time.monotonic()
    out = zmqproc("ping", "--server", f"tcp://127.0.0.1:{free_port()}", "--timeout", "30")
    assert_one_clear_line(out)
    assert "no server reachable for 3 s" in out.stderr and time.monotonic() - started < 10


def test_an_endpoint_without_a_scheme_is_one_line():
    out = zmqproc("ping", "--server", "localhost:5599")
    assert_one_clear_line(out)
    assert out.stderr.strip() == "zmqproc: 'localhost:5599' has no transport: write tcp://localhost:5599"


def test_silent_peer_ping_times_out():
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    try:
        assert_one_clear_line(zmqproc("stats", "--server", f"tcp://127.0.0.1:{port}", "--timeout", "0.5"))
    finally:
        sock.close(linger=0)


def test_several_servers_share_the_work(start_server, tmp_path):
    a, b = start_server("--workers", "1"), start_server("--workers", "1")
    for i in range(4):
        out = zmqproc(
            "process", str(IMAGES / "coffee.png"), "-o", str(tmp_path / f"o{i}.png"), "--server", a.endpoint, "--server", b.endpoint
        )
        assert out.returncode == 0, out.stderr
    ping = zmqproc("ping", "--server", a.endpoint, "--server", b.endpoint)
    assert ping.returncode == 0 and a.endpoint in ping.stdout and b.endpoint in ping.stdout


def test_a_folder_is_processed_into_a_folder_with_a_summary_and_resumes(endpoint, tmp_path):
    """Issue 21, part 2: folders, a summary naming what failed, exit 1 when any did, --skip-existing to resume."""
    import cv2
    import numpy as np

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(5):
        cv2.imwrite(str(folder / f"p{i}.png"), np.full((40, 60, 3), 40 * i, np.uint8))
    (folder / "p9.jpg").write_bytes(b"")
    out = zmqproc("process", str(folder), "-o", str(tmp_path / "out"), "--op", "invert", "--server", endpoint)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stdout.startswith("6 files: 5 done, 1 failed in ") and f"failed: {folder / 'p9.jpg'}: it is empty" in out.stderr
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == [f"p{i}.png" for i in range(5)]
    assert np.array_equal(cv2.imread(str(tmp_path / "out" / "p1.png")), np.full((40, 60, 3), 255 - 40, np.uint8))
    (folder / "p9.jpg").unlink()
    again = zmqproc("process", str(folder), "-o", str(tmp_path / "out"), "--op", "invert", "--skip-existing", "--server", endpoint)
    assert again.returncode == 0 and again.stdout.startswith("5 files: 0 done, 0 failed, 5 skipped (already there)"), again.stdout
    globbed = zmqproc("process", str(folder / "p[12].png"), "-o", str(tmp_path / "two"), "--format", "jpeg", "--server", endpoint)
    assert globbed.returncode == 0 and sorted(p.name for p in (tmp_path / "two").iterdir()) == ["p1.jpg", "p2.jpg"]


def test_a_video_is_processed_frame_by_frame_keeping_its_rate_and_size(endpoint, tmp_path):
    """Issue 21, part 2 for videos: every frame in order, the source's frame rate and size kept (FFV1: lossless)."""
    import cv2
    import numpy as np

    frames = [np.full((48, 64, 3), 20 * i, np.uint8) for i in range(10)]
    writer = cv2.VideoWriter(str(tmp_path / "clip.mkv"), cv2.VideoWriter.fourcc(*"FFV1"), 12.0, (64, 48))
    for frame in frames:
        writer.write(frame)
    writer.release()
    out = zmqproc("process", str(tmp_path / "clip.mkv"), "-o", str(tmp_path / "out.mkv"), "--op", "invert", "--server", endpoint)
    assert out.returncode == 0 and out.stdout.startswith("10 frames: 10 written, 0 failed in "), out.stdout + out.stderr
    assert "(64x48, 12 fps)" in out.stdout
    capture = cv2.VideoCapture(str(tmp_path / "out.mkv"))
    assert capture.get(cv2.CAP_PROP_FPS) == 12.0
    read = []
    while (frame := capture.read())[0]:
        read.append(frame[1])
    assert len(read) == 10 and all(np.array_equal(r, 255 - f) for r, f in zip(read, frames, strict=True)), "in order, lossless"
    bad = zmqproc("process", str(tmp_path / "clip.mkv"), "-o", str(tmp_path / "out.gif"), "--server", endpoint)
    assert bad.returncode != 0 and "a video is written as .mkv, .avi, .mp4, .mov" in bad.stderr and "Traceback" not in bad.stderr


def test_a_huge_image_goes_as_tiles_from_the_command_line(start_server, endpoint, tmp_path):
    """Issue 22: a file bigger than the server takes is tiled by itself, exactly; --tile forces a size."""
    import cv2
    import numpy as np

    from zmqproc import Client

    rng = np.random.default_rng(5)
    image = rng.integers(0, 65536, (1200, 1800, 3), np.uint16)  # 2.2 Mpx, 16-bit
    cv2.imwrite(str(tmp_path / "big.tif"), image)
    small = start_server("--max-pixels", "1000000")
    with Client(endpoint) as client:
        expected = client.process(image, "gaussian_blur:ksize=31")
    for extra in ([], ["--tile", "300"]):
        target = tmp_path / f"out{len(extra)}.tif"
        out = zmqproc(
            "process", str(tmp_path / "big.tif"), "-o", str(target), "--op", "gaussian_blur:ksize=31", "--server", small.endpoint, *extra
        )
        assert out.returncode == 0 and out.stdout.startswith(f"wrote {target}"), out.stdout + out.stderr
        assert np.array_equal(cv2.imread(str(target), cv2.IMREAD_UNCHANGED), expected)
    refused = zmqproc(
        "process", str(tmp_path / "big.tif"), "-o", str(tmp_path / "x.tif"), "--op", "equalize_hist", "--server", small.endpoint
    )
    assert_one_clear_line(refused)
    bad = zmqproc("process", str(tmp_path / "big.tif"), "-o", str(tmp_path / "x.tif"), "--tile", "0", "--server", small.endpoint)
    assert bad.returncode == 2 and "a tile size in pixels" in bad.stderr


def test_a_file_over_a_slow_link_shows_its_transfer(endpoint, tmp_path):
    """Issue 23: an 8 MB file over 20 Mbit/s goes in parts, and the command line says how far it is, at what rate."""
    from tests.conftest import load_script

    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (1400, 2000, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "in.bmp"), image)
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    with load_script("link").link((host, int(port)), 20, 20) as slow:
        out = zmqproc(
            "process", str(tmp_path / "in.bmp"), "-o", str(tmp_path / "out.png"), "--op", "equalize_hist", "--server", slow.endpoint
        )
    assert out.returncode == 0, out.stderr
    assert "up: " in out.stderr and " MB/s" in out.stderr and "ETA" in out.stderr, out.stderr
    from zmqproc import Client

    with Client(endpoint) as client:
        expected = client.process(image, "equalize_hist")
    assert np.array_equal(cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED), expected)
