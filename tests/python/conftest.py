"""Starts Indigo for the tests: `indigo run` servers, each on a fresh data directory
and port, and (when scripts/services runs PostgreSQL and an S3 server) clusters of
`indigo serve` processes, each on a fresh catalogue database and bucket prefix. The
`server` fixture runs each test against both."""
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import chromadb
import httpx
import pytest
from chromadb.config import Settings

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("INDIGO_BIN", ROOT / "target" / "debug" / "indigo"))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    def __init__(self, path, env=None, config=None):
        self.path = Path(path)
        self.env = env or {}
        self.config = config
        self.port = free_port()
        self.proc = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        args = [str(BIN), "run", "--path", str(self.path), "--port", str(self.port)]
        if self.config:
            args += ["--config", str(self.config)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("INDIGO_")}
        env.update(self.env)
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"indigo exited: {self.proc.stdout.read().decode()}")
            try:
                httpx.get(self.url + "/api/v2/heartbeat", timeout=1)
                return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("indigo did not start in 30 s")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            code = self.proc.wait(timeout=30)
            self.proc = None
            return code
        return None

    def client(self, **kw):
        return chromadb.HttpClient(
            host="127.0.0.1",
            port=self.port,
            settings=Settings(anonymized_telemetry=False),
            **kw,
        )

    @property
    def http(self):
        """Raw requests to the API (paths from /api/v2 on)."""
        return httpx.Client(base_url=self.url, timeout=60)


def psql(conninfo, sql):
    bindir = os.environ.get("INDIGO_TEST_PG_BIN")
    exe = str(Path(bindir) / "psql") if bindir else "psql"
    subprocess.run([exe, conninfo, "-q", "-c", sql], check=True, capture_output=True)


class Cluster:
    """The distributed mode on this machine: a log+query node, a second query node,
    a compactor+gc, and a frontend (the address clients use), over a catalogue
    database and bucket prefix of its own."""

    DEFAULT = [
        ("node1", ["log", "query"]),
        ("node2", ["query"]),
        ("background", ["compactor", "gc"]),
    ]

    def __init__(self, tmp, env=None, nodes=None):
        self.nodes = nodes or Cluster.DEFAULT
        pg, s3 = os.environ["INDIGO_TEST_PG"], os.environ["INDIGO_TEST_S3"]
        self.tmp = Path(tmp)
        name = "c_" + uuid.uuid4().hex[:16]
        self.pg, self.db = pg, name
        psql(pg, f"CREATE DATABASE {name}")
        endpoint, bucket = s3.rstrip("/").rsplit("/", 1)
        self.common = {
            "INDIGO_CATALOGUE": pg.replace("dbname=postgres", f"dbname={name}"),
            "INDIGO_S3_ENDPOINT": endpoint,
            "INDIGO_S3_BUCKET": bucket,
            "INDIGO_S3_PREFIX": name,
            "INDIGO_LEASE_MS": "2000",
            "INDIGO_COMPACT_INTERVAL_MS": "100",
        }
        self.env = env or {}
        self.port = free_port()
        self.procs = {}

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start_node(self, name, roles, port=0, env=None):
        args = [str(BIN), "serve", "--port", str(port)]
        for r in roles:
            args += ["--role", r]
        args += ["--cache-dir", str(self.tmp / name / "cache"), "--work-dir", str(self.tmp / name / "work")]
        e = {k: v for k, v in os.environ.items() if not k.startswith("INDIGO_")}
        e.update(self.common)
        e.update(env or {})
        log = open(self.tmp / f"{name}.log", "ab")
        p = subprocess.Popen(args, env=e, stdout=subprocess.PIPE, stderr=log)
        # It prints its address once its leases are taken: routable from then on.
        line = p.stdout.readline().decode()
        if "listening on" not in line:
            p.wait(timeout=30)
            raise RuntimeError(f"indigo serve {roles} failed: {(self.tmp / f'{name}.log').read_text()}")
        self.procs[name] = p
        return line.rsplit("http://", 1)[1].strip()

    def start(self):
        for name, roles in self.nodes:
            self.start_node(name, roles)
        self.start_node("frontend", ["frontend"], port=self.port, env=self.env)
        return self

    def kill(self, name, sig=signal.SIGKILL):
        p = self.procs.pop(name)
        p.send_signal(sig)
        p.wait(timeout=30)

    def stop(self, sig=signal.SIGTERM):
        for name in list(self.procs):
            self.kill(name, sig)

    def drop(self):
        """Stops the cluster for good and drops its catalogue database: each
        one takes 7.5 MB of the test server's disk, and the suite makes dozens."""
        self.stop()
        psql(self.pg, f"DROP DATABASE IF EXISTS {self.db} WITH (FORCE)")

    def client(self, **kw):
        return chromadb.HttpClient(
            host="127.0.0.1",
            port=self.port,
            settings=Settings(anonymized_telemetry=False),
            **kw,
        )

    @property
    def http(self):
        """Raw requests to the API (paths from /api/v2 on)."""
        return httpx.Client(base_url=self.url, timeout=60)


def have_services():
    if os.environ.get("INDIGO_TEST_PG") and os.environ.get("INDIGO_TEST_S3"):
        return True
    if os.environ.get("INDIGO_REQUIRE_SERVICES") == "1":
        raise RuntimeError("INDIGO_TEST_PG / INDIGO_TEST_S3 are not set but the services are required")
    return False


class Embedded:
    """Indigo in this process (the `indigo` package, built from
    crates/indigo-python by scripts/test): chromadb's client over the native
    module, no server. Tests that need an address skip here."""

    def __init__(self, path):
        self.path = Path(path)

    @property
    def url(self):
        pytest.skip("embedded mode has no HTTP address")

    def start(self):
        return self

    def client(self, **kw):
        import indigo

        return indigo.PersistentClient(path=self.path, settings=Settings(allow_reset=True), **kw)

    @property
    def http(self):
        """Raw requests to the API, answered in this process."""
        import indigo._client

        core = indigo._client._core_at(self.path, allow_reset=True)
        return httpx.Client(transport=indigo._client._Transport(core), base_url="http://indigo.embedded")

    def stop(self, sig=None):
        from chromadb.api.shared_system_client import SharedSystemClient
        import indigo._client

        SharedSystemClient.clear_system_cache()
        indigo._client._release(self.path)


def have_embedded():
    try:
        import indigo  # noqa: F401

        return True
    except ImportError:
        if os.environ.get("INDIGO_REQUIRE_EMBEDDED") == "1":
            raise
        return False


MODES = ["single"] + (["cluster"] if have_services() else []) + (["embedded"] if have_embedded() else [])


@pytest.fixture(params=MODES)
def server(request, tmp_path):
    env = {"INDIGO_ALLOW_RESET": "true"}
    if request.param == "single":
        s = Server(tmp_path / "data", env=env).start()
    elif request.param == "embedded":
        s = Embedded(tmp_path / "data").start()
    else:
        s = Cluster(tmp_path, env=env).start()
    yield s
    if isinstance(s, Cluster):
        s.drop()
    else:
        s.stop()


@pytest.fixture
def client(server):
    return server.client()


@pytest.fixture
def make_server(tmp_path):
    started = []

    def make(env=None, config=None, name="data"):
        s = Server(tmp_path / name, env=env, config=config).start()
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


@pytest.fixture
def make_cluster(tmp_path):
    if not have_services():
        pytest.skip("PostgreSQL and S3 are not running (scripts/test starts them)")
    started = []

    def make(nodes=None, env=None):
        c = Cluster(tmp_path, env=env, nodes=nodes).start()
        started.append(c)
        return c

    yield make
    for c in started:
        c.drop()
