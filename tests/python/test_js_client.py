"""The official chromadb npm client against the server (tests/js: smoke.mjs, client.test.mjs)."""
import os
import shutil
import subprocess
from pathlib import Path

JS = Path(__file__).resolve().parents[1] / "js"


def test_npm_client_smoke(server):
    url = server.url  # first: embedded mode has none, and skips
    node = shutil.which("node")
    assert node, "node is required for the JS client test (apt-get install nodejs)"
    assert (JS / "node_modules" / "chromadb").exists(), "run `npm ci` in tests/js (scripts/test does)"
    r = subprocess.run([node, str(JS / "smoke.mjs"), url], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "js smoke test passed" in r.stdout


def test_npm_client_suite(server):
    """tests/js/client.test.mjs: collections, every record operation with filters,
    the search API and errors, through the npm client (node's test runner)."""
    url = server.url  # first: embedded mode has none, and skips
    node = shutil.which("node")
    assert node, "node is required for the JS client test (apt-get install nodejs)"
    assert (JS / "node_modules" / "chromadb").exists(), "run `npm ci` in tests/js (scripts/test does)"
    env = dict(os.environ, INDIGO_URL=url)
    r = subprocess.run(
        [node, "--test", str(JS / "client.test.mjs")],
        cwd=JS, env=env, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "# fail 0" in r.stdout and "# pass 6" in r.stdout, r.stdout
