"""Runs Chroma's own test suite (shipped in the chromadb wheel, chromadb/test/)
against a server and prints a table of results per file.

    run.py                          # the CI set against a fresh `indigo run`
    run.py --server chroma          # the same files against a fresh `chroma run`
    run.py --server embedded        # against Indigo embedded in the test process (the
                                    # `indigo` package, crates/indigo-python)
    run.py --url http://HOST:PORT   # against a running server (e.g. a cluster's frontend)
    run.py --mode cluster ...       # the suite's distributed-only tests (CHROMA_CLUSTER_TEST_ONLY)
    run.py --set full               # also the slow property files (tests/chroma/files.txt)
    run.py FILE...                  # just these files (paths inside chromadb/test)

Tests listed in tests/chroma/deselect.txt are deselected, each for the reason
written beside it; everything else must pass (the exit status is pytest's).
Run it with the venv that has tests/chroma/requirements.txt installed
(scripts/test makes it: tests/chroma/.venv)."""
import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def suite_dir():
    import chromadb

    return Path(chromadb.__file__).resolve().parent / "test"


def read_list(path):
    """Lines of a list file without comments: (entry, reason) pairs."""
    out = []
    for line in path.read_text().splitlines():
        entry, _, reason = line.partition("#")
        entry = entry.strip()
        if entry:
            out.append((entry, reason.strip()))
    return out


def files_of(mode, which):
    """The files of a set: `ci` are the lines up to `# -- slow --`, `full` all."""
    lines = (HERE / f"files-{mode}.txt").read_text().splitlines()
    out = []
    for line in lines:
        if line.strip().startswith("# -- slow --") and which == "ci":
            break
        entry = line.partition("#")[0].strip()
        if entry:
            out.append(entry)
    return out


def wait_until_up(url, proc, what):
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"{what} exited before answering (exit status {proc.returncode})")
        try:
            urllib.request.urlopen(url + "/api/v2/heartbeat", timeout=2).read()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{what} did not answer at {url} within 120 s")


def start_server(kind, workdir, mode):
    """Starts a fresh server of `kind` on a free port: (url, process, log path).
    For the distributed-only tests Indigo reports spann as its default vector
    index, as distributed Chroma does (the suite expects it there)."""
    port = free_port()
    log = workdir / f"{kind}.log"
    if kind == "indigo":
        binary = os.environ.get("INDIGO_BIN", str(ROOT / "target" / "debug" / "indigo"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("INDIGO_")}
        env["INDIGO_ALLOW_RESET"] = "true"
        if mode == "cluster":
            env["INDIGO_DEFAULT_INDEX"] = "spann"
        args = [binary, "run", "--path", str(workdir / "data"), "--port", str(port)]
    else:
        cfg = workdir / "chroma.yaml"
        cfg.write_text(
            f'port: {port}\nlisten_address: "127.0.0.1"\nallow_reset: true\n'
            f'persist_path: "{workdir / "data"}"\n'
        )
        chroma = shutil.which("chroma", path=str(Path(sys.executable).parent))
        if chroma is None:
            raise SystemExit("no `chroma` next to this Python; install chromadb in its venv")
        env = dict(os.environ)
        args = [chroma, "run", str(cfg)]
    proc = subprocess.Popen(
        args, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url, proc, kind)
    return url, proc, log


def stop(proc):
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def table(junit, files, deselected):
    """Per-file counts from pytest's junit XML."""
    rows = {f: {"passed": 0, "failed": 0, "errors": 0, "skipped": 0} for f in files}
    for case in ET.parse(junit).getroot().iter("testcase"):
        f = case.get("file") or case.get("classname", "").replace(".", "/") + ".py"
        f = next((x for x in files if f.endswith(x) or x.endswith(f)), f)
        row = rows.setdefault(f, {"passed": 0, "failed": 0, "errors": 0, "skipped": 0})
        tags = {c.tag for c in case}
        if "failure" in tags:
            row["failed"] += 1
        elif "error" in tags:
            row["errors"] += 1
        elif "skipped" in tags:
            row["skipped"] += 1
        else:
            row["passed"] += 1
    lines = [
        "| file | passed | failed | errors | skipped | deselect entries |",
        "|---|---|---|---|---|---|",
    ]
    total = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "deselected": 0}
    for f, r in rows.items():
        r["deselected"] = sum(1 for d in deselected if d.split("::")[0] == f)
        for k in total:
            total[k] += r[k]
        lines.append(
            f"| {f} | {r['passed']} | {r['failed']} | {r['errors']} | {r['skipped']} | {r['deselected']} |"
        )
    lines.append(
        f"| **all** | {total['passed']} | {total['failed']} | {total['errors']} | "
        f"{total['skipped']} | {total['deselected']} |"
    )
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*")
    ap.add_argument("--server", choices=["indigo", "chroma", "embedded"], default="indigo")
    ap.add_argument("--url", help="a running server instead of a fresh one")
    ap.add_argument("--mode", choices=["integration", "cluster"], default="integration")
    ap.add_argument("--set", choices=["ci", "full"], default="ci")
    ap.add_argument("--table", help="also write the table (markdown) to this file")
    ap.add_argument("--no-deselect", action="store_true", help="run the deselected tests too")
    ap.add_argument("-k", help="pytest -k expression")
    ap.add_argument("-x", action="store_true", help="stop at the first failure")
    args = ap.parse_args()

    suite = suite_dir()
    files = args.files or files_of(args.mode, args.set)
    deselect = [] if args.no_deselect else [d for d, _ in read_list(HERE / f"deselect-{args.mode}.txt")]
    if args.server == "embedded" and not args.no_deselect:
        deselect += [d for d, _ in read_list(HERE / "deselect-embedded.txt")]
    workdir = Path(tempfile.mkdtemp(prefix="indigo-chroma-suite."))
    proc = None
    try:
        if args.server == "embedded":
            # No server: the plugin routes the suite's clients to Indigo in-process.
            url = "http://localhost:8000"
            what = "indigo embedded (in the test process)"
        elif args.url:
            url = args.url.rstrip("/")
            wait_until_up(url, None, url)
            what = url
        else:
            url, proc, log = start_server(args.server, workdir, args.mode)
            what = f"{args.server} at {url} (log: {log})"
        host, port = url.split("//")[1].split(":")
        env = dict(os.environ)
        env.update(
            ANONYMIZED_TELEMETRY="False",
            PROPERTY_TESTING_PRESET=os.environ.get("PROPERTY_TESTING_PRESET", "fast"),
            HF_HUB_OFFLINE="1",
            PYTHONDONTWRITEBYTECODE="1",
            # Some tests start `python -m chromadb.…`: this venv's.
            PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
        )
        if args.mode == "integration":
            # `localhost`: the suite's clients default to it and refuse a different host in settings.
            env.update(CHROMA_INTEGRATION_TEST_ONLY="1", CHROMA_SERVER_HOST="localhost", CHROMA_SERVER_HTTP_PORT=port)
        else:
            env.update(CHROMA_CLUSTER_TEST_ONLY="1", CHROMA_SERVER_HOST=f"{host}:{port}")
        # The default embedding model, from PyPI (the client would download it
        # from Chroma's S3 bucket); the plugin points the client at it.
        subprocess.check_call([str(HERE / "model" / "install.sh")])
        subprocess.check_call([sys.executable, str(HERE / "model" / "check.py")])
        env["PYTHONPATH"] = str(HERE) + os.pathsep + env.get("PYTHONPATH", "")
        junit = workdir / "junit.xml"
        cmd = [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "offline_model",
            "--import-mode=importlib", "-o", "asyncio_mode=auto",
            f"--rootdir={suite}", f"--confcutdir={suite}", f"--junitxml={junit}",
            "-o", "junit_family=xunit1", "-rfE", "--no-header", "-W", "ignore::DeprecationWarning",
        ]
        if args.server == "embedded":
            env["INDIGO_EMBEDDED_PATH"] = str(workdir / "data")
            cmd += ["-p", "indigo_embedded"]
        cmd += [f"--deselect={d}" for d in deselect]
        if args.k:
            cmd += ["-k", args.k]
        if args.x:
            cmd.append("-x")
        cmd += [str(suite / f) for f in files]
        print(f"Chroma's suite ({args.mode}, {len(files)} files) against {what}", flush=True)
        # The suite's hypothesis database and temporary files stay in the work dir.
        code = subprocess.call(cmd, cwd=workdir, env=env)
        if junit.exists():
            t = table(junit, files, deselect)
            print(t)
            if args.table:
                Path(args.table).write_text(t + "\n")
        return code
    finally:
        stop(proc)
        if proc is not None and os.environ.get("KEEP_WORKDIR") != "1":
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
