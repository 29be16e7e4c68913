"""A zmqproc client for tests/system/test_discovery.py, run in a mount namespace of its own (its /etc/hosts is the
test's file): one command per line on stdin, one JSON line per command on stdout.

    run N        -> {"ok": n, "errors": [...], "replicas": [[endpoint, state, rtt], ...]}
    replicas     -> {"replicas": [...]}
"""

from __future__ import annotations

import json
import sys

import numpy as np

from zmqproc import Client, ClientOptions


def main() -> None:
    endpoint, period = sys.argv[1], float(sys.argv[2])
    image = np.zeros((512, 512, 3), np.uint8)
    with Client(endpoint, timeout=10, options=ClientOptions(rediscover=period)) as client:
        print(json.dumps({"replicas": client.replicas()}), flush=True)
        for line in sys.stdin:
            command = line.split()
            if command[0] == "run":
                futures = [client.submit(image, "gaussian_blur:ksize=31") for _ in range(int(command[1]))]
                errors = [repr(f.exception(timeout=15)) for f in futures if f.exception(timeout=15) is not None]
                answer = {"ok": len(futures) - len(errors), "errors": errors, "replicas": client.replicas()}
            else:
                client.ping()  # a turn of the driver: what discovery found is applied
                answer = {"replicas": client.replicas()}
            print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
