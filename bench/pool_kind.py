"""Threads or processes for the server's workers? The same blur work, both ways, in one run.

    .venv/bin/python bench/pool_kind.py

A worker pool gets a 1080p BGR frame and returns the blurred frame, as the
server's workers do. Threads share the frame (OpenCV releases the GIL);
processes must copy it in and out (here through pickling, as
ProcessPoolExecutor does). Prints frames/s for 1 and 2 workers of each kind.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor

import cv2
import numpy as np


def blur(image: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(image, (15, 15), 0)


def init_worker() -> None:
    cv2.setNumThreads(1)


def frames_per_second(pool: Executor, image: np.ndarray, seconds: float, inflight: int = 8) -> float:
    for f in [pool.submit(blur, image) for _ in range(inflight)]:
        f.result()  # warm up: workers started, code loaded
    done, start = 0, time.perf_counter()
    pending = [pool.submit(blur, image) for _ in range(inflight)]
    while (elapsed := time.perf_counter() - start) < seconds:
        pending.pop(0).result()
        done += 1
        pending.append(pool.submit(blur, image))
    for f in pending:
        f.result()
    return done / elapsed


def main() -> None:
    cv2.setNumThreads(1)
    image = np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    print(f"{os.cpu_count()} CPUs; 1080p gaussian_blur k15, 8 in flight, OpenCV threads per worker: 1")
    results = {}
    for kind, make in (
        ("threads", lambda n: ThreadPoolExecutor(n, initializer=init_worker)),
        ("processes", lambda n: ProcessPoolExecutor(n, initializer=init_worker)),
    ):
        for workers in (1, 2):
            with make(workers) as pool:
                results[kind, workers] = frames_per_second(pool, image, 3.0)
            print(f"{kind:<10} {workers} worker(s): {results[kind, workers]:6.1f} frames/s")
    for workers in (1, 2):
        print(f"threads / processes with {workers} worker(s): {results['threads', workers] / results['processes', workers]:.2f}x")


if __name__ == "__main__":
    main()
