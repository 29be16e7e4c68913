"""A real server process with one extra op that raises: checks that a bug in an op stays contained."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zmqproc import op  # noqa: E402
from zmqproc.ops.registry import ALL_DTYPES  # noqa: E402
from zmqproc.server.cli import main  # noqa: E402


@op(dtypes=ALL_DTYPES)
def explode(image: np.ndarray) -> np.ndarray:
    """Raises, to test the server's handling of bugs."""
    raise RuntimeError("deliberate failure")


if __name__ == "__main__":
    sys.exit(main())
