"""Checks Indigo's OpenAPI document against the server with schemathesis: every
documented route is called with generated valid and invalid requests, and each
answer must be no server error, have a documented status and content type, and
match the documented response schema.

    run.py                      # against a fresh `indigo run` ($INDIGO_BIN)
    ST_SEED=N run.py            # another seed (the default is fixed, so CI repeats)

Two passes over one server: the first with the names of a real collection, so
writes and reads reach the core (deletes and reset are left out of it so the
collection stays); the second with generated tenant, database and collection
names (mostly "not found" answers), every route.
Routes in excluded.txt are left out of both, each for its reason. Run it with
the venv that has requirements.txt installed (scripts/test makes it:
tests/openapi/.venv)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def excluded():
    out = []
    for line in (HERE / "excluded.txt").read_text().splitlines():
        entry = line.partition("#")[0].strip()
        if entry:
            method, path = entry.split(None, 1)
            out.append((method, path))
    return out


def call(url, method="GET", body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


def schemathesis(url, cwd, extra):
    st = Path(sys.executable).parent / "schemathesis"
    cmd = [str(st), "run", f"{url}/openapi.json", "--checks", CHECKS,
           "--phases", "examples,coverage,fuzzing", "--max-examples", os.environ.get("ST_EXAMPLES", "30"),
           "--seed", os.environ.get("ST_SEED", "20261127"), "-w", "1", "--no-color"]
    # Indigo's operation ids are "method path".
    for method, path in excluded():
        cmd += ["--exclude-operation-id", f"{method.lower()} {path}"]
    cmd += extra
    print("+", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=cwd)


def main():
    binary = os.environ.get("INDIGO_BIN", str(ROOT / "target" / "debug" / "indigo"))
    tmp = Path(tempfile.mkdtemp(prefix="indigo-openapi-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, INDIGO_BACKUP_DIR=str(tmp / "backups"), INDIGO_ALLOW_RESET="false")
    server = subprocess.Popen([binary, "run", "--path", str(tmp / "data"), "--port", str(port)],
                              env=env, stdout=open(tmp / "server.log", "w"), stderr=subprocess.STDOUT)
    status, passed = 0, False
    try:
        for _ in range(600):
            try:
                call(f"{url}/api/v2/heartbeat")
                break
            except OSError:
                if server.poll() is not None:
                    sys.exit(f"indigo exited at start; see {tmp / 'server.log'}")
                time.sleep(0.1)
        # First a real collection's names (before generated deletes can hit them).
        col = call(f"{url}/api/v2/tenants/default_tenant/databases/default_database/collections",
                   "POST", {"name": "openapi", "get_or_create": True})
        (tmp / "p2").mkdir()
        (tmp / "p2" / "schemathesis.toml").write_text(
            '[parameters]\n"path.tenant" = "default_tenant"\n"path.database" = "default_database"\n'
            f'"path.collection" = "{col["id"]}"\n')
        status |= schemathesis(url, tmp / "p2", ["--exclude-method", "DELETE", "--exclude-path", "/api/v2/reset"])
        # Then generated names, every route.
        (tmp / "p1").mkdir()
        status |= schemathesis(url, tmp / "p1", [])
        if server.poll() is not None:
            sys.exit(f"indigo exited during the run; see {tmp / 'server.log'}")
        call(f"{url}/api/v2/heartbeat")
        print("schemathesis: " + ("0 failures" if status == 0 else "FAILURES (see above)"), flush=True)
        passed = status == 0
        sys.exit(status)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        # Kept after a failure (its server.log says what the server saw).
        if passed:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
