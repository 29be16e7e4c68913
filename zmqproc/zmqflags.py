"""pyzmq's flags as plain ints, for the hot paths: arithmetic on pyzmq's enums costs microseconds a message."""

import zmq

POLLIN = int(zmq.POLLIN)
POLLOUT = int(zmq.POLLOUT)
NOBLOCK = int(zmq.NOBLOCK)
EVENTS = int(zmq.EVENTS)


def readable(sock: zmq.Socket) -> bool:
    """A message waits on ``sock`` (cheaper than a recv that ends in zmq.Again)."""
    return bool(int(sock.getsockopt(EVENTS)) & POLLIN)
