"""Run the zmqproc viewer: python gui_app.py [--server tcp://127.0.0.1:5555] [--open FILE ...]"""

import sys

from zmqproc.gui.app import main

if __name__ == "__main__":
    sys.exit(main())
