"""A real server process with one extra op that raises: checks that a bug in an op stays contained."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zmqproc import ops  # noqa: E402
from zmqproc.server_cli import main  # noqa: E402


@ops.op("explode", "Raises, to test the server's handling of bugs.", dtypes=ops.ALL_DTYPES)
def explode(image):
    raise RuntimeError("deliberate failure")


if __name__ == "__main__":
    sys.exit(main())
