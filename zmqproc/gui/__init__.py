"""The viewer: a PySide6 window over the client session (its ``QtClient`` is a thin driver on the Qt event loop).

It may import every wing below it (the client, SSH, the ground floor) but never the server or the ops: it learns the ops
from the server's ``ops`` reply. Its Qt-free helpers live in ``helpers`` (and the plain words for errors in ``messages``),
so they are tested without a display.
"""
