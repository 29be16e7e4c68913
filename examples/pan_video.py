"""A video to try streams with, made from a shipped sample photo: a slow pan, 5 s at 30 fps, 640x480, lossless.

python examples/pan_video.py pan.mkv [--sample coffee]
zmqproc process pan.mkv -o pan-edges.mkv --op canny
python gui_app.py --open pan.mkv --pipeline canny
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from zmqproc import samples  # noqa: E402
from zmqproc.images import VideoSink  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("output", help="the video to write (.mkv lossless, .avi, .mp4)")
    p.add_argument("--sample", default="coffee", choices=list(samples.SAMPLES))
    args = p.parse_args()
    photo = cv2.imread(str(samples.path(args.sample)), cv2.IMREAD_COLOR)
    wide = cv2.resize(photo, (960, 480), interpolation=cv2.INTER_AREA)
    sink = VideoSink(args.output, 30.0)
    for i in range(150):
        x = round(320 * i / 149)
        sink.write(wide[:, x : x + 640].copy())
    sink.close()
    print(f"wrote {args.output}: 150 frames, 640x480, 30 fps")


if __name__ == "__main__":
    main()
