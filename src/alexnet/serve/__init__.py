"""``alexnet serve``: a checkpoint as a web page and a JSON API (needs ``pip install 'alexnet[serve]'``).

* :mod:`~alexnet.serve.service`: the checkpoint and its answers (predictions,
  fc7 and pixel neighbours, thumbnails, conv1's filters), no web framework;
* :mod:`~alexnet.serve.batcher`: requests that arrive together share one
  forward pass, on one model thread off the event loop;
* :mod:`~alexnet.serve.app`: the Starlette app (routes, limits, JSON errors,
  OpenAPI) and ``static/``, the page;
* :func:`run_server`: the app under uvicorn on a socket bound beforehand.

Only :mod:`~alexnet.serve.service` and :mod:`~alexnet.serve.batcher` import
without the extra; :func:`require_serve` says in one line what is missing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import sys
import threading
import time

from ..errors import UserError

EXTRA = "pip install 'alexnet[serve]'"
NEEDS = {"starlette": "starlette", "uvicorn": "uvicorn", "python_multipart": "python-multipart"}

__all__ = ["EXTRA", "bind", "in_thread", "require_serve", "run_server", "server"]


def require_serve() -> None:
    """A :class:`UserError` naming the extra when a package of it is missing."""
    missing = [pkg for mod, pkg in NEEDS.items() if importlib.util.find_spec(mod) is None]
    if missing:
        raise UserError(f"serving needs {', '.join(missing)}: {EXTRA}")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one); an address in use is an ``OSError``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def server(service, sock: socket.socket, *, access_log: bool = True, log_level: str = "info"):
    """A uvicorn ``Server`` for ``service`` on ``sock`` (run it with ``server.run(sockets=[sock])``)."""
    import uvicorn

    from .app import create_app

    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        create_app(service), host=host, port=port, lifespan="on", access_log=access_log, log_level=log_level,
        timeout_keep_alive=5,  # an idle keep-alive connection is closed after 5 s
        limit_concurrency=4 * service.limits.max_inflight + 16,  # a backstop; the app answers 503 before this
        h11_max_incomplete_event_size=16 << 10,  # request line and headers: 16 KiB at most
        server_header=False,
    )
    return uvicorn.Server(config)


def run_server(service, host: str = "127.0.0.1", port: int = 8000, *, access_log: bool = True,
               log_level: str = "info", out=sys.stdout) -> int:
    """Serve ``service`` until Ctrl-C; prints the address first (with the port chosen for port 0)."""
    sock = bind(host, port)
    srv = server(service, sock, access_log=access_log, log_level=log_level)
    h, p = sock.getsockname()[:2]
    shown = f"[{h}]" if ":" in h else h
    nb = f"; neighbours among {service.train_count} training images" if service.searchers else ""
    print(f"alexnet serve: http://{shown}:{p}/ ({service.ck.name}, {service.ck.num_classes} classes{nb}); "
          f"Ctrl-C stops", file=out, flush=True)
    srv.run(sockets=[sock])
    return 0


@contextlib.contextmanager
def in_thread(service, host: str = "127.0.0.1", port: int = 0, *, timeout: float = 30.0):
    """Serve ``service`` from a thread of this process for the length of a ``with`` block; yields the
    base URL (``http://127.0.0.1:PORT``). For tests, notebooks and benchmarks."""
    sock = bind(host, port)
    srv = server(service, sock, access_log=False, log_level="warning")
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, name="alexnet-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not srv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            srv.should_exit = True
            sock.close()
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    h, p = sock.getsockname()[:2]
    try:
        yield f"http://{h}:{p}"
    finally:
        srv.should_exit = True
        thread.join(timeout)
        sock.close()
