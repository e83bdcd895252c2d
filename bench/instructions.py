"""Instructions per proxied request under callgrind: a figure other load cannot move.

    uv run python bench/instructions.py [OTHER_TREE ...] [--requests 200]

On a shared machine req/s and even CPU time per request move with whatever else runs
(cache, frequency, the other hyperthread). Instructions executed do not: this runs the
gateway (`python -m gateway serve`, this tree and each OTHER_TREE) under valgrind's
callgrind with instrumentation off until it is serving, sends each proxy-bound
workload (bench/proxybound.py) on one keep-alive connection, one request at a time,
zeroes the counters after a warm-up, dumps them after `--requests` more and prints
user-space instructions per request. Kernel work (the system calls) is not counted:
syscalls per request are a separate figure (`strace -c`). Needs `valgrind` (Debian).
A benchmark tool, never a test.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httptools  # noqa: E402

from bench import product, proxybound  # noqa: E402
from tests.ports import reserved_port  # noqa: E402
from tests.proxy.conftest import Server, wait_listening  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("others", type=Path, nargs="*")
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("missing valgrind: apt-get install -y valgrind")
        sys.exit(2)
    trees = {"this tree": ROOT} | {str(tree): tree.resolve() for tree in args.others}
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        static = proxybound.start_static(Path(tmp), None)
        try:
            for name, tree in trees.items():
                results[name] = measure(tree, static.url, Path(tmp), args.requests)
        finally:
            static.stop()
    workloads = list(proxybound.WORKLOADS)
    print("\n| tree | " + " | ".join(f"{w} (instructions/req)" for w in workloads) + " |")
    print("|---|" + "---|" * len(workloads))
    for name, row in results.items():
        print(f"| {name} | " + " | ".join(f"{row[w]:,.0f}" for w in workloads) + " |")


def requests(token: str) -> dict[str, bytes]:
    made = {}
    for workload, (path, _) in proxybound.WORKLOADS.items():
        body = {"/api/search": proxybound.SEARCH_BODY, "/mcp": proxybound.MCP_BODY}.get(path)
        head = (
            f"{'POST' if body else 'GET'} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n"
        )
        if body:
            head += (
                "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
                f"Content-Length: {len(body)}\r\n"
            )
        made[workload] = (head + "\r\n" + (body or "")).encode()
    return made


class _Count:
    def __init__(self) -> None:
        self.done = 0

    def on_message_complete(self) -> None:
        self.done += 1


def _drive(port: int, data: bytes, counter: list[int], stop: threading.Event) -> None:
    """One request at a time on one connection until `stop`; counter[0] counts answers."""
    count = _Count()
    parser = httptools.HttpResponseParser(count)
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        while not stop.is_set():
            sock.sendall(data)
            wanted = count.done + 1
            while count.done < wanted:
                parser.feed_data(sock.recv(65536))
            counter[0] += 1


def measure(tree: Path, upstream: str, tmp: Path, count: int) -> dict[str, float]:
    port = reserved_port()
    state = tempfile.mkdtemp(dir=tmp)
    out = Path(state) / "callgrind.out"
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "MCP_GATEWAY_UPSTREAM": upstream,
        "MCP_HTTP_PORT": str(port),
        "MCP_HTTP_HOST": "127.0.0.1",
        "MCP_GATEWAY_STATE_DIR": state,
        "MCP_OAUTH_ISSUER": f"http://127.0.0.1:{port}",
        "MCP_GATEWAY_LOG_LEVEL": "WARNING",
        "MCP_DCR_REGISTRATION_KEY": product.REGISTRATION_KEY,
    }
    command = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        sys.executable,
        "-m",
        "gateway",
        "serve",
    ]
    proc = subprocess.Popen(command, cwd=tree, env=env, stderr=subprocess.DEVNULL)
    server = Server(port, proc)  # type: ignore[arg-type]
    found: dict[str, float] = {}
    try:
        wait_listening(port, proc, 300)  # type: ignore[arg-type]
        token = product.oauth_token(server.url, "read")
        for workload, data in requests(token).items():
            label = re.sub(r"[^A-Za-z]+", "_", workload)
            counter, stop = [0], threading.Event()
            driver = threading.Thread(target=_drive, args=(port, data, counter, stop))
            driver.start()
            try:
                while counter[0] < 30:  # warm-up; callgrind_control needs it running
                    time.sleep(0.05)
                control(proc.pid, "-i", "on")
                control(proc.pid, "-z")
                start = counter[0]
                while counter[0] < start + count:
                    time.sleep(0.02)
                control(proc.pid, "-d", label)
                end = counter[0]
                control(proc.pid, "-i", "off")
            finally:
                stop.set()
                driver.join()
            # The dump falls between `start + count` and `end` answers.
            found[workload] = dumped(out, label) / ((count + end - start) / 2)
            print(f"{tree}: {workload}: {found[workload]:,.0f} instructions/request", flush=True)
    finally:
        server.stop()
    return found


def control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True, check=False)


def dumped(out: Path, label: str) -> int:
    for path in out.parent.glob(out.name + "*"):
        text = path.read_text(errors="replace")
        if re.search(rf"^desc: Trigger: dump {label}$", text, re.M):
            total = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
            if total:
                return int(total.group(1))
    raise RuntimeError(f"no callgrind dump for {label}")


if __name__ == "__main__":
    main()
