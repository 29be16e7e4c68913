"""Print what the image installs, one requirement a line: pyproject's runtime dependencies, the extras the server
image has (IMAGE_EXTRAS: `metrics`, so `--metrics-port` works in any container) and the build requirements.

Read by `make wheels` (pip download into ./wheelhouse) and by docker/Dockerfile (pip install), so pyproject.toml
stays the one list. Left out: what only a client uses (paramiko, for SSH tunnels; zmqproc loads it only when a
client asks for a tunnel, so the server and the healthcheck's ping never import it).
Usage: python3 docker/requirements.py [pyproject.toml]
"""

import re
import sys
import tomllib

CLIENT_ONLY = {"paramiko"}
IMAGE_EXTRAS = ("metrics",)

with open(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml", "rb") as f:
    meta = tomllib.load(f)
server = [r for r in meta["project"]["dependencies"] if re.split(r"[<>=!~ ;\[]", r)[0] not in CLIENT_ONLY]
server += [r for extra in IMAGE_EXTRAS for r in meta["project"]["optional-dependencies"][extra]]
print("\n".join(server + meta["build-system"]["requires"]))
