"""The peers' echo servers for bench/peers.py, each run as its own process like zmqproc's server.

python bench/peer_servers.py imagezmq tcp://127.0.0.1:PORT   # imagezmq ImageHub (REP): recv_image, send_reply(image)
python bench/peer_servers.py http PORT                       # FastAPI on uvicorn: POST /echo, octet-stream both ways
python bench/peer_servers.py netgear PORT [jpeg]             # vidgear NetGear receiver (PAIR, bidirectional): frames back
"""

import sys

import numpy as np


def imagezmq_hub(endpoint: str) -> None:
    """imagezmq's REQ/REP pattern as documented: ``recv_image`` then ``send_reply``; the reply carries the image back."""
    import imagezmq

    hub = imagezmq.ImageHub(open_port=endpoint)
    while True:
        _name, image = hub.recv_image()
        hub.send_reply(image)  # one frame of raw pixels; the sender knows the shape it sent


def http_echo(port: int) -> None:
    """A FastAPI service: the raw pixels in an ``application/octet-stream`` body, dtype and shape in headers."""
    import uvicorn
    from fastapi import FastAPI, Request, Response

    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> Response:
        shape = tuple(int(n) for n in request.headers["x-shape"].split(","))
        image = np.frombuffer(await request.body(), dtype=request.headers["x-dtype"]).reshape(shape)
        headers = {"x-shape": ",".join(map(str, image.shape)), "x-dtype": str(image.dtype)}
        return Response(content=image.data, media_type="application/octet-stream", headers=headers)

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def netgear_echo(port: str, jpeg: bool) -> None:
    """vidgear's NetGear as its docs pair it for processed frames: a receiver in bidirectional mode, its default pattern
    (0, PAIR: one sender), that hands each frame back as the ``return_data`` of its next reply; JPEG compression on or
    off. It ends when its sender closes."""
    from vidgear.gears import NetGear

    options = {"bidirectional_mode": True, "jpeg_compression": jpeg}
    receiver = NetGear(receive_mode=True, address="127.0.0.1", port=port, pattern=0, logging=False, **options)
    processed = None
    while (data := receiver.recv(return_data=processed)) is not None:
        _message, processed = data  # identity: the frame itself goes back
    receiver.close()


if __name__ == "__main__":
    kind, where = sys.argv[1], sys.argv[2]
    if kind == "imagezmq":
        imagezmq_hub(where)
    elif kind == "netgear":
        netgear_echo(where, sys.argv[3:] == ["jpeg"])
    else:
        http_echo(int(where))
