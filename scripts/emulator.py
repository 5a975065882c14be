#!/usr/bin/env python3
"""Starts the test emulator: a moto server on a free loopback port (DESIGN.md §5).

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
import urllib.request

# Attaching AWS managed policies fails with NoSuchEntity unless moto loads them at import.
os.environ.setdefault("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")


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
    from waitress.server import create_server

    moto_patches.apply()
    # Warnings such as waitress's task-queue depth drown test output; errors still show.
    import logging

    logging.getLogger("waitress").setLevel(logging.ERROR)

    # moto's own server (ThreadedMotoServer) is werkzeug's development server: a new thread
    # and a new connection for every request (it answers `Connection: close`), and requests
    # that contend for the GIL, which moto's backends hold for nearly all of a request. Here
    # moto's app runs under waitress, which keeps connections alive, and one request at a time.
    # A no-op plan (33 requests) took 0.69x the time it took under ThreadedMotoServer
    # (bench/results.md).
    app = DomainDispatcherApplication(create_backend_app)
    one_at_a_time = threading.Lock()

    def serialised(environ, start_response):
        with one_at_a_time:
            return list(app(environ, start_response))

    # Enough threads for every request a command has in flight (they wait on the lock).
    server = create_server(serialised, host="127.0.0.1", port=args.port, threads=32, ident="moto")
    threading.Thread(target=server.run, daemon=True).start()
    host, port = server.effective_host, server.effective_port
    endpoint = f"http://{host}:{port}"

    # Batch jobs go straight to SUCCEEDED instead of needing a Docker engine.
    req = urllib.request.Request(
        f"{endpoint}/moto-api/config",
        data=json.dumps({"batch": {"use_docker": False}}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(req, timeout=10).read()

    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(endpoint + "\n")
        os.replace(tmp, args.port_file)
    print(f"MOTO_ENDPOINT={endpoint}", flush=True)

    # Exit at once, without waiting on in-flight requests (the server threads are daemons).
    # The signal handlers exit themselves: one that set an Event the main thread waits on
    # could run inside that wait, while it holds the Event's lock, and deadlock.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    if args.watch_stdin:
        def watch():
            while sys.stdin.buffer.read(4096):
                pass
            os._exit(0)

        threading.Thread(target=watch, daemon=True).start()
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
