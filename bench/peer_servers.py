"""The peers' echo servers for bench/peers.py, each run as its own process like zmqproc's server.

python bench/peer_servers.py imagezmq tcp://127.0.0.1:PORT   # imagezmq ImageHub (REP): recv_image, send_reply(image)
python bench/peer_servers.py http PORT                       # FastAPI on uvicorn: POST /echo, octet-stream both ways
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


if __name__ == "__main__":
    kind, where = sys.argv[1], sys.argv[2]
    imagezmq_hub(where) if kind == "imagezmq" else http_echo(int(where))
