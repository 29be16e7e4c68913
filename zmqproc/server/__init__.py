"""The server: a sans-I/O core and the thin socket loop that drives it.

``core`` decides (admission, credit via ``credit``, the memory ``budget``, the fair ``work_queue``, what to run inline and
what to start or stop on a worker, the replies); ``work`` is what one job does; ``pool`` the worker processes and their
shared memory; ``loop`` the ROUTER loop that only moves frames; ``cli`` the ``zmqproc-server`` command.

Never imports the client, SSH or the viewer.
"""
