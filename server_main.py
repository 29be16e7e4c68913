"""Run the zmqproc processing server: python server_main.py --bind tcp://127.0.0.1:5555 --workers 2"""

import sys

from zmqproc.server.cli import main

if __name__ == "__main__":
    sys.exit(main())
