"""The CLI as an operator meets it: clear messages, no tracebacks, on bad start-up input."""

import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path
) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MCP_GATEWAY_UPSTREAM": "https://backend"}, "MCP_GATEWAY_UPSTREAM must be an http://"),
        ({"MCP_OAUTH_STORAGE": "mysql://x"}, "MCP_OAUTH_STORAGE must be"),
        ({"MCP_HTTPS_ENABLED": "true"}, "needs MCP_SSL_CERT_FILE"),
        ({"MCP_GATEWAY_LOG_LEVEL": "chatty"}, "MCP_GATEWAY_LOG_LEVEL must be"),
    ],
)
def test_bad_configuration_exits_2_with_a_message(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    done = run_cli("serve", env=env, cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_policy_file_names_the_file_and_entry(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("routes:\n  - path: /x\n    methods: 7\n    scopes: [read]\n")
    done = run_cli("serve", env={"MCP_GATEWAY_POLICY": str(policy)}, cwd=tmp_path)
    assert done.returncode == 2
    assert f"{policy}: routes[0]" in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_certificate_is_a_clear_start_up_error(tmp_path: Path) -> None:
    env = {
        "MCP_HTTPS_ENABLED": "true",
        "MCP_SSL_CERT_FILE": str(tmp_path / "missing.pem"),
        "MCP_SSL_KEY_FILE": str(tmp_path / "missing.key"),
    }
    done = run_cli("serve", env=env, cwd=tmp_path)
    assert done.returncode == 1
    assert "cannot start" in done.stderr
    assert "Traceback" not in done.stderr


def test_lower_case_log_level_is_accepted(tmp_path: Path) -> None:
    env = {"MCP_GATEWAY_LOG_LEVEL": "warning", "MCP_GATEWAY_UPSTREAM": "ftp://x"}
    done = run_cli("serve", env=env, cwd=tmp_path)
    assert done.returncode == 2
    assert "MCP_GATEWAY_UPSTREAM" in done.stderr
    assert "Traceback" not in done.stderr


def test_certs_and_keys_commands(tmp_path: Path) -> None:
    made = run_cli("certs", "--dir", "c", "--san", "memory.lan", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "c" / "dev-ca.pem").exists()
    listed = run_cli("keys", "list", "--state-dir", "s", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()[:2]
    assert header.split() == ["KID", "ALGORITHM", "CREATED", "STATE"]
    first = row.split()[0]
    rotated = run_cli("keys", "rotate", "--state-dir", "s", cwd=tmp_path)
    assert rotated.returncode == 0, rotated.stderr
    lines = [line for line in rotated.stdout.splitlines() if "ES256" in line]
    assert len(lines) == 2
    assert lines[0].startswith(first)
    assert "retired" in lines[0]
    assert "active" in lines[1]


def test_storage_unreachable_at_start_up_is_one_line_and_exit_3(tmp_path: Path) -> None:
    env = {"MCP_OAUTH_STORAGE": "redis://127.0.0.1:1/0", "MCP_HTTP_PORT": "0"}
    done = run_cli("serve", "--state-dir", "s", env=env, cwd=tmp_path)
    assert done.returncode == 3
    assert "start-up failed" in done.stderr
    assert "Traceback" not in done.stderr


def test_port_0_with_workers_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """Each worker would bind a port of its own: port 0 is served by one process."""
    done = run_cli("serve", "--port", "0", "--workers", "2", cwd=tmp_path)
    assert done.returncode == 2
    assert "port 0 is served by one process" in done.stderr
    assert "Traceback" not in done.stderr
