"""A real server process with one extra op that SIGKILLs the server: a poison request, for the client's ServerCrashed rule.

The server's pid is recorded before serving, so the op kills the server whether ops run in its threads or in worker
processes of their own.
"""

import os
import signal
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zmqproc import op  # noqa: E402
from zmqproc.server.cli import main  # noqa: E402

PID_VARIABLE = "ZMQPROC_TEST_SERVER_PID"


@op(heavy=True)
def kill_server(image: np.ndarray) -> np.ndarray:
    """SIGKILLs the server process, to test what clients do with a request that crashes its server."""
    os.kill(int(os.environ[PID_VARIABLE]), signal.SIGKILL)
    return image


if __name__ == "__main__":
    os.environ[PID_VARIABLE] = str(os.getpid())
    sys.exit(main())
