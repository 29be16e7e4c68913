"""The client: one sans-I/O session and the thin drivers that carry its inputs and outputs.

``session`` is the state machine (requests, routes, credit, resends, liveness) that takes submissions, frames, connection
events and the time and returns what to send and what happened; ``events`` holds what it returns; ``replies`` turns reply
frames into values. ``threaded`` (the library's ``Client``) and ``dealer`` (the DEALER sockets and the driver turn both
clients share) move frames; ``pipeline`` reads and writes pipeline text; ``cli`` is the ``zmqproc`` command.

Never imports the server, the ops or the viewer (the client runs nothing and knows ops only from the server's ``ops`` reply).
"""

from .threaded import Client, ClientOptions, Processed

__all__ = ["Client", "ClientOptions", "Processed"]
