"""README "Put it in front of mcp-memory-service": its steps, run as written.

Only the ports (8000, 8001: taken by others on a shared machine) and the venv path
(the one tests/upstream/install.sh already made) are substituted; HOME and the
gateway's state directory point into a temporary directory.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from pathlib import Path

from tests.ports import reserved_port
from tests.upstream.conftest import VENV, VERSION, memory_command

ROOT = Path(__file__).resolve().parents[2]


def readme_steps() -> str:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- readme-steps:begin -->", 1)[1].split("<!-- readme-steps:end -->")[0]
    return block.strip().removeprefix("```bash").removesuffix("```")


def test_readme_steps_run_as_written(tmp_path: Path) -> None:
    memory_command()  # skips (or fails under REQUIRE_MCP_MEMORY_SERVICE) without the venv
    script = readme_steps()
    # The steps name their ports (8000, 8001): reserved ones are written in instead.
    gateway_port, upstream_port = reserved_port(), reserved_port()
    script = re.sub(r"\b8001\b", str(upstream_port), script)
    script = re.sub(r"\b8000\b", str(gateway_port), script)
    script = script.replace("$HOME/mcp-memory-service", str(VENV))
    script = script.replace("install.sh 10.59.0", f"install.sh {VERSION}")
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "MCP_GATEWAY_STATE_DIR": str(tmp_path / "state"),
        "MCP_MDNS_ENABLED": "false",
        "MCP_MEMORY_SQLITE_PATH": str(tmp_path / "memories.db"),
    }
    process = subprocess.Popen(
        ["bash", "-c", script + "\nwait\n"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "steps.log").open("w"),
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    # every wait bounded: the steps have two minutes to print their three answers
    watchdog = threading.Timer(120, lambda: os.killpg(process.pid, signal.SIGTERM))
    watchdog.start()
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.strip())
            if len([x for x in lines if x.isdigit()]) >= 2:
                break
    finally:
        watchdog.cancel()
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    health = [line for line in lines if line.startswith("{")]
    assert health, lines
    assert '"healthy"' in health[0] or '"ok"' in health[0], lines
    codes = [line for line in lines if line.isdigit()]
    assert codes == ["401", "401"], lines
