"""``zmqproc`` / ``python -m zmqproc``: process, ping, ops, stats, samples, check-port, keygen."""

from __future__ import annotations

import argparse
import getpass
import glob
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import samples
from ..endpoints import DEFAULT_SERVER, Endpoint, port_state
from ..errors import ProcessingError, ZmqprocError
from ..formats import BY_NAME, ENCODED_FORMATS, TABLE, for_path, images_in
from ..images import MAX_CLIENT_PIXELS, VIDEO_CODECS, VideoSink, describe_file, file_bytes, read_video
from ..security import generate_keypair
from .events import Progress
from .pipeline import parse_step
from .threaded import Client


class UserError(Exception):
    """A mistake on the command line or a failure to report in one line."""


def _client(args: argparse.Namespace) -> Client:
    return Client(
        args.server or [DEFAULT_SERVER],
        timeout=args.timeout,
        curve_server_key=args.curve_server_key,
        curve_client_key=args.curve_client_key,
        ssh=args.ssh,
        ssh_key=args.ssh_key,
        ssh_password=_secret(args.ssh_ask_password, "ZMQPROC_SSH_PASSWORD", f"SSH password for {args.ssh}: "),
        ssh_key_passphrase=_secret(args.ssh_ask_passphrase, "ZMQPROC_SSH_KEY_PASSPHRASE", f"Passphrase of {args.ssh_key or 'the key'}: "),
        ssh_backend=args.ssh_backend,
        ssh_known_hosts=args.ssh_known_hosts,
        ssh_accept_new_host_key=args.accept_new_host_key,
    )


def _secret(ask: bool, variable: str, prompt: str) -> str | None:
    """Asked on the terminal when the flag says so, else from the environment; never an argument (``ps`` would show it)."""
    return getpass.getpass(prompt) if ask else os.environ.get(variable)


def cmd_process(args: argparse.Namespace) -> int:
    one_file = len(args.input) == 1 and (Path(args.input[0]).is_file() or args.input[0].startswith(samples.SCHEME))
    if one_file and Path(args.input[0]).suffix.lower() in VIDEO_CODECS:
        return _process_video(args, args.input[0])
    if one_file and not Path(args.output).is_dir():
        return _process_one(args, args.input[0])
    return _process_many(args, _expand(args.input))


def _expand(given: list[str]) -> list[Path]:
    """Files as given (sample:NAME resolved), a folder's images, a quoted glob's matches; in order, each once."""
    found: list[Path] = []
    for text in given:
        if text.startswith(samples.SCHEME):
            found.append(Path(samples.resolve(text)))
        elif Path(text).is_dir():
            found += images_in(Path(text))
        elif any(c in text for c in "*?[") and not Path(text).exists():
            found += [Path(p) for p in sorted(glob.glob(text)) if Path(p).is_file()]
        else:
            found.append(Path(text))
    return list(dict.fromkeys(found))


def _process_many(args: argparse.Namespace, paths: list[Path]) -> int:
    """Many inputs into the folder ``--output``: as a stream (Client.map), with progress, a summary, exit 1 on a failure."""
    if not paths:
        raise UserError(f"no image files in {' '.join(args.input)}")
    fmt, out_dir = BY_NAME[args.format], Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [(p, out_dir / (p.stem + fmt.suffix)) for p in paths]
    if args.skip_existing:
        todo = [(p, t) for p, t in todo if not t.exists()]
    skipped, failed, sent = len(paths) - len(todo), [], []
    progress = _Progress(len(todo))

    def inputs() -> Iterator[bytes]:
        for path, target in todo:
            try:
                data = path.read_bytes()
                describe_file(data, MAX_CLIENT_PIXELS)
            except OSError as exc:
                failed.append((path, exc.strerror or str(exc)))
                continue
            except ProcessingError as exc:
                failed.append((path, exc.message))
                continue
            sent.append((path, target))
            yield data

    steps = [parse_step(text) for text in args.op] or [parse_step("identity")]
    with _client(args) as client:
        for item in client.map(inputs(), steps, reply_format=fmt.name if fmt.server_encodes else "raw"):
            path, target = sent[item.index]
            try:
                if item.error is not None:
                    raise item.error
                target.write_bytes(file_bytes(item.result, fmt.name))
                progress.done += 1
            except ZmqprocError as exc:
                failed.append((path, exc.message if isinstance(exc, ProcessingError) else str(exc)))
            progress.show(len(failed))
    progress.show(len(failed), final=True)
    took = time.monotonic() - progress.started
    kept = f", {skipped} skipped (already there)" if skipped else ""
    print(f"{len(paths)} files: {progress.done} done, {len(failed)} failed{kept} in {took:.1f} s; results in {out_dir}")
    for path, why in failed:
        print(f"failed: {path}: {why}", file=sys.stderr)
    return 1 if failed else 0


def _process_video(args: argparse.Namespace, given: str) -> int:
    """Every frame of a video, in order, into ``--output`` at the source's frame rate (the sound is not carried); a
    frame that fails is reported and left out, never the end of the run."""
    try:
        info, frames = read_video(given)
        sink = VideoSink(args.output, info.fps)
    except ProcessingError as exc:
        raise UserError(exc.message) from None
    steps = [parse_step(text) for text in args.op] or [parse_step("identity")]
    progress, failed = _Progress(info.frames), []
    try:
        with _client(args) as client:
            for item in client.map(frames, steps, reply_format="raw"):
                try:
                    if item.error is not None:
                        raise item.error
                    sink.write(item.result)
                    progress.done += 1
                except ZmqprocError as exc:
                    failed.append((item.index, exc.message if isinstance(exc, ProcessingError) else str(exc)))
                progress.show(len(failed))
    finally:
        sink.close()
    progress.show(len(failed), final=True)
    took = time.monotonic() - progress.started
    size = f"{sink.size[0]}x{sink.size[1]}" if sink.size else "no frame"
    written = f"{progress.done} written, {len(failed)} failed in {took:.1f} s"
    print(f"{progress.done + len(failed)} frames: {written}; {args.output} ({size}, {info.fps:g} fps)")
    for index, why in failed:
        print(f"failed: frame {index}: {why}", file=sys.stderr)
    return 1 if failed else 0


class _Progress:
    """done / failed / total, images/s (or, for the tiles of ``nbytes``, MB/s) and ETA: one line rewritten on a terminal,
    a plain line every 2 s otherwise."""

    def __init__(self, total: int, unit: str = "images", nbytes: int = 0) -> None:
        self.total, self.done, self.started = total, 0, time.monotonic()
        self._shown = self.started  # the first line once there is a rate to show
        self.unit, self.nbytes = unit, nbytes
        self.tty = sys.stderr.isatty()

    def show(self, failed: int, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._shown < (0.1 if self.tty else 2.0):
            return
        self._shown = now
        finished = self.done + failed
        rate = finished / max(now - self.started, 1e-9)
        eta = f", ETA {(self.total - finished) / rate:.0f} s" if rate and finished < self.total else ""
        speed = f"{rate * self.nbytes / self.total / 1e6:.1f} MB/s" if self.nbytes else f"{rate:.1f} {self.unit}/s"
        _line(self.tty, f"{finished}/{self.total} {self.unit}: {self.done} done, {failed} failed, {speed}{eta}", final)


class _Transfer:
    """A payload or result in parts: bytes up or down of how many, rate and ETA, on the same terms as :class:`_Progress`."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self._shown = time.monotonic()

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        done = p.down and p.received == p.down
        if not done and now - self._shown < (0.1 if self.tty else 2.0):
            return
        self._shown = now
        way, moved, total = ("down", p.received, p.down) if p.down else ("up", p.sent, p.up)
        eta = f", ETA {p.eta:.0f} s" if p.eta is not None and not done else ""
        _line(self.tty, f"{way}: {moved / 1e6:.1f} of {total / 1e6:.1f} MB, {p.rate / 1e6:.1f} MB/s{eta}", bool(done))


def _line(tty: bool, line: str, final: bool) -> None:
    """A progress line: rewritten in place on a terminal (ended by the final one), else printed (the final one is not:
    the summary follows)."""
    if tty:
        print(f"\r{line}\x1b[K", end="\n" if final else "", file=sys.stderr, flush=True)
    elif not final:
        print(line, file=sys.stderr, flush=True)


def _process_one(args: argparse.Namespace, given: str) -> int:
    data = Path(samples.resolve(given)).read_bytes()
    try:
        describe_file(data, MAX_CLIENT_PIXELS)
    except ProcessingError as exc:
        raise UserError(f"{given}: {exc.message}") from None
    steps = [parse_step(text) for text in args.op] or [parse_step("identity")]
    fmt = for_path(args.output)
    if fmt is None:
        raise UserError(f"cannot write {args.output}: name it .{', .'.join(s.lstrip('.') for f in TABLE for s in f.suffixes)}")
    bar: _Progress | None = None

    def tiles_done(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = _Progress(total, "tiles", _pixel_bytes(data))
        bar.done = done
        bar.show(0, final=done == total)

    with _client(args) as client:
        reply_format = fmt.name if fmt.server_encodes else "raw"
        result = client.process(
            data, steps, reply_format=reply_format, details=True, tile=args.tile, progress=tiles_done, on_transfer=_Transfer()
        )
    try:
        Path(args.output).write_bytes(file_bytes(result.image, fmt.name))
    except ProcessingError as exc:  # the result's pixels do not fit the file's format (float32 as bmp, ...)
        raise UserError(f"cannot write {args.output}: {exc.message}") from None
    if args.results:
        text = json.dumps(result.results, indent=2) + "\n"
        if args.results == "-":
            sys.stdout.write(text)
        else:
            Path(args.results).write_text(text)
    found = f"; {_summary(result.results, result.result_kinds)}" if result.results else ""
    how = f"as {bar.total} tiles, server {result.server_ms:.1f} ms in all" if bar is not None else f"server {result.server_ms:.1f} ms"
    print(f"wrote {args.output} ({how}{found})", file=sys.stderr if args.results == "-" else sys.stdout)
    return 0


def _pixel_bytes(data: bytes) -> int:
    """What a file decodes to, in bytes."""
    desc = describe_file(data, MAX_CLIENT_PIXELS)
    assert desc.shape is not None and desc.dtype is not None
    return int(np.prod(desc.shape)) * np.dtype(desc.dtype).itemsize


def _tile_arg(text: str) -> int | str:
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a tile size in pixels or 'auto', not {text!r}")
    return int(text)


def _summary(results: dict[str, Any], kinds: dict[str, str]) -> str:
    """What the ops found, one line: short values in full, long lists by their length (``--results`` has them all)."""
    parts = []
    for key, value in results.items():
        if isinstance(value, list) and len(value) > 3:
            parts.append(f"{key}: {len(value)} {kinds.get(key, 'values')}")
        else:
            parts.append(f"{key}={json.dumps(value)}")
    return ", ".join(parts)


def cmd_ping(args: argparse.Namespace) -> int:
    with _client(args) as client:
        rtt = client.ping()
        print(f"pong from {', '.join(client.endpoints)} in {rtt * 1000:.2f} ms (epoch {client.epoch})")
    return 0


def _param_text(name: str, p: dict[str, Any]) -> str:
    if p["type"] == "choice":
        return f"{name}={p['default']} {{{'|'.join(map(str, p['choices']))}}}"
    if p["type"] == "bool":
        return f"{name}={str(p['default']).lower()}"
    return f"{name}={p['default']} [{p.get('min')}..{p.get('max')}{', odd' if p.get('odd') else ''}]"


def cmd_ops(args: argparse.Namespace) -> int:
    with _client(args) as client:
        listing = client.ops()
    width = max(len(o["name"]) for o in listing)
    for o in listing:
        source = o.get("source", "builtin")
        print(f"{o['name']:<{width}}  {o['doc']}" + ("" if source == "builtin" else f"  [from {source}]"))
        for name, p in o["params"].items():
            print(f"{'':<{width}}    {_param_text(name, p)}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.ping()  # the connections' first answers: which replicas are up
        found = client.replicas()
        each = client.stats_each() if len(found) > 1 else {found[0][0]: client.stats()}
        replicas = client.replicas()  # the states once each replica has answered (or not)
    if len(replicas) > 1:
        print(f"{len(replicas)} replicas: " + ", ".join(f"{e} ({state})" for e, state, _ in replicas))
    failed = 0
    for endpoint, stats in each.items():
        if len(each) > 1:
            print(f"\n{endpoint}")
        if isinstance(stats, BaseException):
            failed += 1
            print(f"  no answer: {stats}")
            continue
        for key, value in stats.items():
            print(f"{key:<16} {value}")
    return 1 if failed else 0


def cmd_samples(args: argparse.Namespace) -> int:
    width = max(map(len, samples.names()))
    for name, (_, what) in samples.SAMPLES.items():
        print(f"{samples.SCHEME}{name:<{width}}  {what}  ({samples.path(name)})")
    return 0


def cmd_check_port(args: argparse.Namespace) -> int:
    state = port_state(args.host, args.port, args.timeout)
    print(f"{args.host}:{args.port} tcp {state}")
    if state != "open":
        return 1
    endpoint = str(Endpoint("tcp", args.host, args.port))
    with Client(endpoint, timeout=args.timeout) as client:
        try:
            rtt = client.ping()
        except TimeoutError:
            print(f"no zmqproc reply from {endpoint} within {args.timeout} s (something else listens there?)")
            return 1
    print(f"zmqproc ping {rtt * 1000:.2f} ms (epoch {client.epoch})")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    public, secret = generate_keypair(args.name, args.dir)
    print(f"public key {public} (copy it to the other side)\nsecret key {secret} (mode 0600; never copy it)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zmqproc", description="Remote image processing over ZeroMQ.")
    sub = p.add_subparsers(dest="command", required=True)

    def with_server(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument(
            "--server",
            action="append",
            metavar="EP",
            help=f"server endpoint; repeat for several servers sharing the work (default {DEFAULT_SERVER})",
        )
        sp.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a reply (default %(default)s)")
        sp.add_argument("--curve-server-key", metavar="FILE_OR_Z85", help="CURVE: the server's public key (NAME.key or its Z85 text)")
        sp.add_argument("--curve-client-key", metavar="FILE", help="CURVE: this client's NAME.key_secret")
        sp.add_argument("--ssh", metavar="USER@HOST[:PORT]", help="reach --server through an SSH tunnel (--server as seen from HOST)")
        sp.add_argument("--ssh-key", metavar="FILE", help="SSH private key (default: ssh-agent and ~/.ssh keys)")
        sp.add_argument("--ssh-ask-password", action="store_true", help="ask for the SSH login password (else $ZMQPROC_SSH_PASSWORD)")
        sp.add_argument(
            "--ssh-ask-passphrase", action="store_true", help="ask for the SSH key's passphrase (else $ZMQPROC_SSH_KEY_PASSPHRASE)"
        )
        sp.add_argument("--ssh-backend", choices=("auto", "paramiko", "openssh"), default="auto", help="default %(default)s")
        sp.add_argument("--ssh-known-hosts", metavar="FILE", help="known_hosts to check the SSH host key in (default ~/.ssh/known_hosts)")
        sp.add_argument("--accept-new-host-key", action="store_true", help="trust an unknown SSH host key (never a changed one)")
        return sp

    sp = with_server(sub.add_parser("process", help="process an image file, or many (files, folders, globs) into a folder"))
    sp.add_argument(
        "input",
        nargs="+",
        help="image files, folders (their images), globs, sample:NAME (see `zmqproc samples`), or one video (.mkv .mp4 .avi .mov)",
    )
    sp.add_argument(
        "-o", "--output", required=True, help="output file (png, jpeg, webp: encoded by the server; bmp, tiff: here), or folder for many"
    )
    sp.add_argument("--format", choices=ENCODED_FORMATS, default="png", help="many inputs: the results' format (default %(default)s)")
    sp.add_argument("--skip-existing", action="store_true", help="many inputs: skip those whose result is already in the folder")
    sp.add_argument(
        "--tile",
        type=_tile_arg,
        default="auto",
        metavar="N|auto",
        help="one image: as tiles of N pixels, exactly the whole image's result (default auto: tiles when the image is more "
        "than the server takes or its workers can share it, if the pipeline can be tiled)",
    )
    sp.add_argument("--op", action="append", default=[], metavar="NAME[:k=v,...]", help="a pipeline step (repeatable, in order)")
    sp.add_argument("--results", metavar="FILE", help="write what the ops found (faces, points, counts) as JSON to FILE, - for stdout")
    sp.set_defaults(run=cmd_process)
    with_server(sub.add_parser("ping", help="round-trip time to the server")).set_defaults(run=cmd_ping)
    with_server(sub.add_parser("ops", help="the server's operations and their parameters")).set_defaults(run=cmd_ops)
    with_server(sub.add_parser("stats", help="the server's counters")).set_defaults(run=cmd_stats)
    sub.add_parser("samples", help="the sample photos that `process sample:NAME` can use").set_defaults(run=cmd_samples)
    sp = sub.add_parser("check-port", help="TCP state of HOST:PORT, then a zmqproc ping if open")
    sp.add_argument("host")
    sp.add_argument("port", type=int)
    sp.add_argument("--timeout", type=float, default=3.0)
    sp.set_defaults(run=cmd_check_port)
    sp = sub.add_parser("keygen", help="write a CURVE keypair: NAME.key (public) and NAME.key_secret")
    sp.add_argument("name")
    sp.add_argument("--dir", default=".", help="directory for the key files (default: the current one)")
    sp.set_defaults(run=cmd_keygen)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (ZmqprocError, TimeoutError, UserError, OSError, ValueError) as exc:  # every zmqproc error, in one line
        print(f"zmqproc: {exc}", file=sys.stderr)
        return 1
