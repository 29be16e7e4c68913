"""Print what the image installs, one requirement a line: pyproject's runtime dependencies and build requirements.

Read by `make wheels` (pip download into ./wheelhouse) and by docker/Dockerfile (pip install), so pyproject.toml
stays the one list. Usage: python3 docker/requirements.py [pyproject.toml]
"""

import sys
import tomllib

with open(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml", "rb") as f:
    meta = tomllib.load(f)
print("\n".join(meta["project"]["dependencies"] + meta["build-system"]["requires"]))
