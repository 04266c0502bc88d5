"""`i2i serve`: the translation page and HTTP API on a local port (Starlette app served by uvicorn)."""

from __future__ import annotations

import ipaddress
import signal
import socket
from pathlib import Path

import typer
from rich.markup import escape

from ..errors import I2IError, warn
from .base import app, cli_errors, out

#: the defaults of --max-bytes and --max-pixels (:mod:`i2i.serve` holds them; it needs starlette to import)
MAX_BYTES, MAX_PIXELS = 32 * 2**20, 2048 * 2048


class _Stop(BaseException):
    """Ctrl-C / SIGTERM, handed back by uvicorn once it has shut down gracefully."""


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` for uvicorn, so that a busy port or a bad address is one line before
    anything is served (and the URL printed is the one that works)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise I2IError(f"--host {host} is not an address of this machine ({exc.strerror}); use 127.0.0.1 (this "
                       f"machine only) or 0.0.0.0 (every network)") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restart at once after a stop
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise I2IError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port (or stop what "
                       f"uses it)") from None
    return sock


def _url(sock: socket.socket) -> tuple[str, bool]:
    """(the URL to open for the bound socket, whether it is reachable from other machines)."""
    host, port = sock.getsockname()[:2]
    ip = ipaddress.ip_address(host)
    shown = ("127.0.0.1" if ip.version == 4 else "::1") if ip.is_unspecified else host
    return f"http://{f'[{shown}]' if ':' in shown else shown}:{port}/", not ip.is_loopback


def _serve(application: object, sock: socket.socket) -> None:
    """Run uvicorn on ``sock`` until Ctrl-C or SIGTERM (uvicorn finishes the requests under way, then returns)."""
    import uvicorn

    def stop(signum: int, frame: object) -> None:  # uvicorn raises the signal it caught again after shutting down
        raise _Stop

    config = uvicorn.Config(application, log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=5, server_header=False)
    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except _Stop:
        pass
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        sock.close()


@app.command("serve")
@cli_errors
def serve_cmd(
    ckpt: list[Path] = typer.Option(..., "--ckpt", metavar="<path>", help="exported generator(s) to offer; repeat "
                                    "for several"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (0.0.0.0: every network)"),
    port: int = typer.Option(8000, "--port", help="port to listen on"),
    device: str = typer.Option("auto", "--device"),
    max_pixels: int = typer.Option(MAX_PIXELS, "--max-pixels", help="largest image taken, width × height"),
    max_bytes: int = typer.Option(MAX_BYTES, "--max-bytes", help="largest image file taken, in bytes"),
    precision: str = typer.Option("auto", "--precision", help="auto (fp16 on CUDA, fp32 on CPU), fp32, bf16, fp16"),
) -> None:
    """Serve a page to translate images in the browser, and an HTTP API (POST /translate); Ctrl-C stops."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise I2IError('i2i serve needs starlette and uvicorn: pip install "i2i[serve]"') from None
    from ..device import resolve_device
    from ..serve import create_app, load_generators

    if not 1 <= port <= 65535:
        raise I2IError(f"--port {port} is not a port: use 1 to 65535 (e.g. 8000)")
    if max_pixels < 1 or max_bytes < 1:
        raise I2IError("--max-pixels and --max-bytes must be >= 1")
    generators = load_generators(ckpt, resolve_device(device), precision)  # each once, before anything is served
    application = create_app(generators, max_bytes=max_bytes, max_pixels=max_pixels)
    sock = _listen(host, port)
    url, exposed = _url(sock)
    if exposed:
        warn(f"listening on {host}: anyone who can reach this machine on port {port} can use the generators (no "
             f"authentication); the default --host 127.0.0.1 keeps it to this machine")
    names = ", ".join(generators)
    where = next(iter(generators.values())).device
    out.print(f"[green]serving[/] {escape(f'{len(generators)} generator(s) ({names}) on {where}')}: open "
              f"[bold]{escape(url)}[/] (Ctrl-C stops)", highlight=False, soft_wrap=True)
    _serve(application, sock)
    out.print("stopped", highlight=False)
