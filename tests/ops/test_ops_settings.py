"""Operations settings and the container health probe's choice of route."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from gateway.settings import Settings, SettingsError, parse_address

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_off_text_on_ten_seconds_one_worker() -> None:
    settings = Settings.from_env({})
    assert settings.metrics_addr is None
    assert (settings.log_format, settings.request_log) == ("text", True)
    assert (settings.drain_seconds, settings.workers) == (10.0, 1)


def test_metrics_address_forms() -> None:
    assert parse_address("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_address(":9464") == ("127.0.0.1", 9464)
    assert parse_address("[::1]:9464") == ("::1", 9464)
    env = {"MCP_GATEWAY_METRICS_ADDR": "0.0.0.0:9464", "MCP_GATEWAY_WORKERS": "3"}
    settings = Settings.from_env(env)
    assert settings.metrics_addr == ("0.0.0.0", 9464)
    assert settings.workers == 3
    assert Settings.from_env({"MCP_GATEWAY_METRICS_ADDR": "off"}).metrics_addr is None


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MCP_GATEWAY_METRICS_ADDR": "127.0.0.1:8000"}, "public port"),
        ({"MCP_GATEWAY_METRICS_ADDR": "9464"}, "HOST:PORT"),
        ({"MCP_GATEWAY_METRICS_ADDR": "h:70000"}, "HOST:PORT"),
        ({"MCP_GATEWAY_LOG_FORMAT": "xml"}, "MCP_GATEWAY_LOG_FORMAT"),
        ({"MCP_GATEWAY_DRAIN_SECONDS": "0"}, "MCP_GATEWAY_DRAIN_SECONDS"),
        ({"MCP_GATEWAY_WORKERS": "0"}, "MCP_GATEWAY_WORKERS"),
        ({"MCP_GATEWAY_REQUEST_LOG": "maybe"}, "MCP_GATEWAY_REQUEST_LOG"),
    ],
)
def test_bad_operations_settings_are_clear_errors(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        Settings.from_env(env)


def test_health_probe_asks_readyz_and_healthz_when_live() -> None:
    spec = importlib.util.spec_from_file_location("probe", ROOT / "scripts/docker-healthcheck.py")
    assert spec is not None
    assert spec.loader is not None
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    argv = ["/opt/venv/bin/python", "/opt/venv/bin/memory-gateway", "serve"]
    assert probe.health_url(argv).endswith(":8000/readyz")
    assert probe.health_url(argv, live=True).endswith(":8000/healthz")
    backend = ["/opt/venv/bin/python", "/opt/venv/bin/memory-backend", "--port", "8001"]
    assert probe.health_url(backend) == "http://127.0.0.1:8001/api/health"
