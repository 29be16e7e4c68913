"""SSH tunnels: a private, self-healing forward from a local end to a server behind SSH.

``tunnel`` is what clients open and watch; ``rules`` parses and checks what a user asks for (pure); ``local`` makes the
private local end (a socket only its owner reaches); ``backend_openssh`` and ``backend_paramiko`` are the two ways to run
the forward.

Never imports the client, the server, the ops or the viewer: a client uses a tunnel, a tunnel knows nothing of zmqproc's
requests.
"""
