"""Threads or processes for the server's workers? The server's real pool against threads running the same jobs, in one run.

    flock /tmp/zmqproc-bench.lock .venv/bin/python bench/pool_kind.py [--seconds 3]

Both run ``zmqproc.server.work.run`` (decode, pipeline, encode) on the same job with 2 x workers in flight. Threads share the
frame (OpenCV releases the GIL), as the server did before issue 12. Processes are ``zmqproc.server.pool.WorkerPool``, the
server's: the frame is copied into the worker's shared-memory segment, the result out of it, and the parent reads it
from there (one copy each way). Prints jobs/s for 1 and 2 workers of each kind, threads/processes, and 2-over-1 scaling.
"""

from __future__ import annotations

import argparse
import os
import select
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from zmqproc import ops, work  # noqa: E402
from zmqproc.client.pipeline import to_steps  # noqa: E402
from zmqproc.images import ImageDescriptor  # noqa: E402
from zmqproc.server.pool import Finished, WorkerPool  # noqa: E402

JOBS = {
    "1080p identity": ((1080, 1920, 3), "identity"),
    "1080p invert": ((1080, 1920, 3), "invert"),
    "1080p gaussian_blur k15": ((1080, 1920, 3), "gaussian_blur:ksize=15"),
    "VGA bilateral_filter d=15 (heavy)": ((480, 640, 3), "bilateral_filter:d=15"),
}


def make_spec(image: np.ndarray, pipeline: str) -> work.Spec:
    desc = ImageDescriptor("raw", "uint8", image.shape)
    return work.Spec.of(desc, ops.validate_pipeline(to_steps(pipeline)), "raw", 40_000_000)


def threads_rate(workers: int, image: np.ndarray, spec: work.Spec, seconds: float) -> float:
    with ThreadPoolExecutor(workers, initializer=cv2.setNumThreads, initargs=(1,)) as pool:
        inflight = 2 * workers
        pending = [pool.submit(work.run, spec, image) for _ in range(inflight)]
        done, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            pending.pop(0).result()
            done += 1
            pending.append(pool.submit(work.run, spec, image))
        for f in pending:
            f.result()
        return done / elapsed


def processes_rate(workers: int, image: np.ndarray, spec: work.Spec, seconds: float) -> float:
    pool = WorkerPool(workers)
    pool.start()
    try:
        while pool.idle() < workers:
            select.select(pool.fds(), [], [], 0.1)
            pool.events()
        queued, job, done, start, elapsed = 2 * workers, 0, 0, time.perf_counter(), 0.0
        while True:
            while queued and pool.idle():
                job += 1
                pool.submit(job, spec, image, image.nbytes)
                queued -= 1
            select.select(pool.fds(), [], [], 0.1)
            for event in pool.events():
                assert isinstance(event, Finished) and event.outcome.code == "ok"
                if isinstance(event.outcome.result, memoryview):
                    event.outcome.result.release()
                if event.segment is not None:
                    pool.release(event.segment)
                done += 1
                queued += 1
            if (elapsed := time.perf_counter() - start) >= seconds:
                return done / elapsed
    finally:
        pool.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=3.0)
    args = p.parse_args()
    cv2.setNumThreads(1)
    print(f"{os.cpu_count()} CPUs; 2 x workers jobs in flight; OpenCV threads per worker: 1")
    print("| job | workers | threads jobs/s | processes jobs/s | threads / processes |")
    print("|---|---|---|---|---|")
    for name, (shape, pipeline) in JOBS.items():
        image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        spec = make_spec(image, pipeline)
        rates = {}
        for workers in (1, 2):
            rates["threads", workers] = threads_rate(workers, image, spec, args.seconds)
            rates["processes", workers] = processes_rate(workers, image, spec, args.seconds)
            t, pr = rates["threads", workers], rates["processes", workers]
            print(f"| {name} | {workers} | {t:.1f} | {pr:.1f} | {t / pr:.2f}x |", flush=True)
        print(
            f"| {name}: 2 workers / 1 | | {rates['threads', 2] / rates['threads', 1]:.2f}x | "
            f"{rates['processes', 2] / rates['processes', 1]:.2f}x | |",
            flush=True,
        )


if __name__ == "__main__":
    main()
