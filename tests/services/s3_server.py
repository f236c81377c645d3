"""An S3-compatible server for the tests: moto, served single-threaded.

moto honours If-None-Match / If-Match on PutObject, but its threaded server can
interleave two conditional writes to one key; served one request at a time, each
compare-and-swap is atomic, which is what the distributed mode relies on.

    python s3_server.py PORT
"""
import os
import socket
import sys

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple


def main() -> None:
    port = int(sys.argv[1])
    # Served one at a time, a request whose sender died mid-body would block
    # every later one forever; with a timeout its connection is dropped.
    socket.setdefaulttimeout(30)
    os.environ.setdefault("MOTO_PORT", str(port))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple("127.0.0.1", port, app, threaded=False, use_reloader=False)


if __name__ == "__main__":
    main()
