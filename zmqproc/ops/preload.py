"""Imported by the worker pool's forkserver: the plugin ops the server loaded, loaded again there, so every worker has them.

The server validated them at start (:mod:`zmqproc.ops.plugins`), so loading cannot fail here in a way it did not there.
"""

import json
import os

from . import plugins

_wanted = json.loads(os.environ.get(plugins.WORKER_ENV) or '{"specs": [], "entry_points": false}')
plugins.load(_wanted["specs"], entry_points=_wanted["entry_points"])
