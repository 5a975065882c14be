#!/usr/bin/env python3
"""Starts the test emulator: a moto server on a free loopback port (docs/design.md, "The test
emulator").

    .venv/bin/python scripts/emulator.py [--port N] [--port-file F] [--watch-stdin]

Prints `MOTO_ENDPOINT=http://127.0.0.1:PORT` on stdout once the server answers.
With --watch-stdin it exits when its stdin closes, so a test process that spawns it with a pipe
never leaves a server behind (also on a panic, a failed assertion or Ctrl-C); on Linux it also
asks the kernel to send it SIGTERM when its parent dies.

Where moto lacks an AWS rule the tool relies on, `moto_patches.py` adds it before the server
starts; each patch there says which rule and why.
"""
import argparse
import json
import os
import signal
import sys
import threading
import time
import urllib.request

# Attaching AWS managed policies fails with NoSuchEntity unless moto loads them at import.
os.environ.setdefault("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
# CORS headers are for browsers; the SDK ignores them, and adding them cost 3 % of every request.
os.environ.setdefault("MOTO_DISABLE_GLOBAL_CORS", "true")


def die_with_parent():
    """Linux: SIGTERM this process when the process that spawned it exits."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--port-file", help="also write the endpoint URL to this file")
    parser.add_argument("--watch-stdin", action="store_true", help="exit when stdin closes")
    args = parser.parse_args()

    if args.watch_stdin:
        die_with_parent()

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import moto_patches  # noqa: E402  (patches moto before the server imports its backends)
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    moto_patches.apply()

    def create_app(service):
        backend_app = create_backend_app(service)
        # moto turns on Flask's debug mode, whose per-request checks are for a developer at a
        # browser (3 % of a request); an error still answers 500 without it.
        backend_app.debug = False
        return backend_app

    app = DomainDispatcherApplication(create_app)
    server = granian_server(app, args.port)

    def announce():
        server.bound.wait()
        endpoint = f"http://127.0.0.1:{server.bound_port}"
        # The socket is bound before the worker serves: retry until moto answers.
        body = json.dumps({"batch": {"use_docker": False}}).encode()
        for attempt in range(200):
            req = urllib.request.Request(
                f"{endpoint}/moto-api/config",
                data=body,
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            try:
                # Batch jobs go straight to SUCCEEDED instead of needing a Docker engine.
                urllib.request.urlopen(req, timeout=10).read()
                break
            except OSError as err:
                if attempt == 199:
                    # Whoever waits for the endpoint line sees the exit instead of waiting on.
                    print(f"moto did not answer on {endpoint}: {err}", file=sys.stderr, flush=True)
                    os._exit(1)
                time.sleep(0.05)
        if args.port_file:
            tmp = args.port_file + ".tmp"
            with open(tmp, "w") as f:
                f.write(endpoint + "\n")
            os.replace(tmp, args.port_file)
        print(f"MOTO_ENDPOINT={endpoint}", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    if args.watch_stdin:
        def watch():
            while sys.stdin.buffer.read(4096):
                pass
            os._exit(0)

        threading.Thread(target=watch, daemon=True).start()
    # Serves until SIGTERM or SIGINT (then exits at once, see GranianServer).
    server.serve(target_loader=lambda *_, **__: app, wrap_loader=False)


def granian_server(app, port):
    """moto's WSGI app under granian, a Rust HTTP server (pinned in requirements-test.txt).

    moto's own server (ThreadedMotoServer) is werkzeug's development server: a thread and a
    connection per request (it answers `Connection: close`), HTTP parsed in Python. waitress,
    used here before, keeps connections alive but still parses in Python and hands every
    request between two threads. granian parses and answers in Rust and calls the app from one
    Python thread, so moto's backends, which hold the GIL for nearly all of a request, answer
    one request at a time as they did behind waitress and a lock. A no-op plan of the reference
    stack took 0.82x its time under waitress (docs/engine.md "The emulator").

    Three overrides of granian's thread-based server, all about running inside this process:
    it binds one listening socket here (port 0 lets the kernel pick, atomically, and the port
    is read back); it skips the check that refuses a GIL interpreter (that server is meant
    for free-threaded Python, where it runs Python on several threads at once; with the GIL
    it runs the same worker thread, one request at a time, which is all the emulator asks);
    and SIGTERM or SIGINT exits at once instead of draining in-flight requests.
    """
    import logging
    import socket

    from granian._granian import ListenerSpec
    from granian.constants import HTTPModes, Interfaces
    from granian.log import LogLevels
    from granian.server.mt import MTServer

    class GranianServer(MTServer):
        bound = threading.Event()
        bound_port = None

        def _check_gil(self):
            pass

        def _init_shared_socket(self):
            self._shd = ListenerSpec(self.bind_addr, self.bind_port, self.backlog).build()
            self._sfd = self._shd.get_fd()
            self._ssp = None
            probe = socket.socket(fileno=os.dup(self._sfd))
            self.bound_port = probe.getsockname()[1]
            probe.close()
            self.bound.set()

        def signal_handler_interrupt(self, *args, **kwargs):
            # Exit at once, without waiting on in-flight requests.
            os._exit(0)

    if port:
        # granian's listener sets SO_REUSEPORT: a second server on a taken port would share it
        # with the first instead of failing. A plain bind fails as it should (SO_REUSEADDR
        # only lets it past connections of an earlier server still in TIME_WAIT).
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as err:
                sys.exit(f"port {port} is taken ({err.strerror}); choose another or 0 for any free one")
    server = GranianServer(
        "moto",
        address="127.0.0.1",
        port=port,
        interface=Interfaces.WSGI,
        workers=1,
        blocking_threads=1,
        http=HTTPModes.http1,
        websockets=False,
        log_level=LogLevels.error,
    )
    # granian's notice that its thread-based server is experimental is about free-threaded
    # Python; errors still show.
    logging.getLogger("_granian").setLevel(logging.ERROR)
    return server


if __name__ == "__main__":
    main()
