"""Starts `indigo run` servers for the tests, each on a fresh data directory and port."""
import os
import signal
import socket
import subprocess
import time
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


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path / "data", env={"INDIGO_ALLOW_RESET": "true"}).start()
    yield s
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
