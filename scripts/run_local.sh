#!/bin/sh
# `make run`: a local server on 127.0.0.1 plus the viewer connected to it; the server stops when the viewer exits.
set -eu
BIN=${BIN:-.venv/bin}
ENDPOINT="tcp://${HOST:-127.0.0.1}:${PORT:-5555}"
"$BIN/python" server_main.py --bind "$ENDPOINT" --workers "${WORKERS:-2}" &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT INT TERM
"$BIN/python" gui_app.py --server "$ENDPOINT" "$@"
