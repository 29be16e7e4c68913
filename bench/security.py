"""What CURVE costs: identity round trips per second with CURVE against the same server without it, in one run.

Run: flock /tmp/zmqproc-bench.lock .venv/bin/python bench/security.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import best_of, rate, zmqproc_server  # noqa: E402
from zmqproc.client.threaded import Client  # noqa: E402
from zmqproc.security import generate_keypair  # noqa: E402

SIZES = {"64x64": (64, 64, 3), "VGA": (480, 640, 3), "1080p": (1080, 1920, 3)}
SECONDS = 2.0


def measure(client: Client, image: np.ndarray) -> float:
    return best_of(3, lambda: rate(lambda: client.process(image, "identity"), SECONDS))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server_public, server_secret = generate_keypair("server", tmp)
        client_public, client_secret = generate_keypair("client", tmp)
        allow = Path(tmp) / "allow"
        allow.mkdir()
        (allow / "client.key").write_bytes(client_public.read_bytes())
        curve_args = ("--curve-secret", str(server_secret), "--curve-allow", str(allow))
        print("| image | plain round trips/s | CURVE round trips/s | CURVE / plain |")
        print("|---|---|---|---|")
        for name, shape in SIZES.items():
            image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
            with zmqproc_server(1) as plain_endpoint, Client(plain_endpoint, timeout=30) as plain:
                baseline = measure(plain, image)
            with (
                zmqproc_server(1, *curve_args) as curve_endpoint,
                Client(curve_endpoint, timeout=30, curve_server_key=server_public, curve_client_key=client_secret) as curve,
            ):
                secured = measure(curve, image)
            print(f"| {name} | {baseline:.0f} | {secured:.0f} | {secured / baseline:.2f} |", flush=True)


if __name__ == "__main__":
    main()
