"""A zmqproc client for tests/system/test_discovery.py, run in a mount namespace of its own (its /etc/hosts is the
test's file): one command per line on stdin, one JSON line per command on stdout. ``--qt``: the viewer's QtClient
(driven by a Qt event loop) instead of the library's Client.

    run N        -> {"ok": n, "errors": [...], "replicas": [[endpoint, state, rtt], ...]}
    replicas     -> {"replicas": [...]}
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np

from zmqproc import Client, ClientOptions

IMAGE = np.zeros((512, 512, 3), np.uint8)
OP = "gaussian_blur:ksize=31"


def threaded(endpoint: str, options: ClientOptions) -> None:
    with Client(endpoint, timeout=10, options=options) as client:
        print(json.dumps({"replicas": client.replicas()}), flush=True)
        for line in sys.stdin:
            command = line.split()
            if command[0] == "run":
                futures = [client.submit(IMAGE, OP) for _ in range(int(command[1]))]
                errors = [repr(f.exception(timeout=15)) for f in futures if f.exception(timeout=15) is not None]
                answer = {"ok": len(futures) - len(errors), "errors": errors, "replicas": client.replicas()}
            else:
                client.ping()  # a turn of the driver: what discovery found is applied
                answer = {"replicas": client.replicas()}
            print(json.dumps(answer), flush=True)


def qt(endpoint: str, options: ClientOptions) -> None:
    from PySide6.QtCore import QCoreApplication, QEventLoop, QTimer

    from zmqproc.gui.qt_client import QtClient

    app = QCoreApplication([])
    client = QtClient([endpoint], timeout=10, options=options)
    ended: dict[str, Any] = {}
    client.processed.connect(lambda rid, _value: ended.__setitem__(rid, None))
    client.failed.connect(lambda rid, error: ended.__setitem__(rid, repr(error)))

    def spin(seconds: float, until: Any = lambda: False) -> None:
        loop = QEventLoop()
        timer = QTimer()
        timer.timeout.connect(lambda: loop.quit() if until() else None)
        timer.start(10)
        QTimer.singleShot(int(seconds * 1000), loop.quit)
        loop.exec()

    spin(0.3)
    print(json.dumps({"replicas": client.replicas()}), flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == "run":
            ids = [client.process(IMAGE, OP) for _ in range(int(command[1]))]
            spin(20, lambda ids=ids: all(i in ended for i in ids))
            errors = [ended.get(i, "no answer") for i in ids if ended.get(i, "no answer") is not None]
            answer = {"ok": len(ids) - len(errors), "errors": errors, "replicas": client.replicas()}
        else:
            spin(0.2)
            answer = {"replicas": client.replicas()}
        print(json.dumps(answer), flush=True)
    client.close()
    app.quit()


def main() -> None:
    endpoint, period = sys.argv[1], float(sys.argv[2])
    options = ClientOptions(rediscover=period)
    (qt if "--qt" in sys.argv[3:] else threaded)(endpoint, options)


if __name__ == "__main__":
    main()
