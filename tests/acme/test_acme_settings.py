from pathlib import Path

import pytest

from gateway.settings import LETS_ENCRYPT_DIRECTORY, Settings, SettingsError

KEY = {"MCP_API_KEY": "k" * 20}


def test_acme_settings_and_defaults(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    env = {
        **KEY,
        "MCP_HTTPS_ENABLED": "true",
        "MCP_ACME_DOMAINS": "Memory.Example.com, mcp.example.com memory.example.com.",
        "MCP_ACME_EMAIL": "ops@example.com",
        "MCP_ACME_CA_FILE": str(ca),
    }
    settings = Settings.from_env(env)
    assert settings.acme_enabled
    assert settings.acme_domains == ("memory.example.com", "mcp.example.com")
    assert settings.acme_directory == LETS_ENCRYPT_DIRECTORY
    assert settings.acme_email == "ops@example.com"
    assert settings.acme_ca_file == ca
    assert settings.issuer == "https://memory.example.com"  # the first ACME domain
    assert settings.http_redirect_port == 80  # HTTP-01 arrives on port 80
    assert settings.port == 8443
    assert settings.cert_file is None


def test_explicit_issuer_and_redirect_port_win() -> None:
    env = {
        **KEY,
        "MCP_HTTPS_ENABLED": "true",
        "MCP_ACME_DOMAINS": "memory.example.com",
        "MCP_OAUTH_ISSUER": "https://mcp.example.org",
        "MCP_HTTP_REDIRECT_PORT": "8080",
        "MCP_ACME_DIRECTORY": "https://acme-staging-v02.api.letsencrypt.org/directory",
    }
    settings = Settings.from_env(env)
    assert settings.issuer == "https://mcp.example.org"
    assert settings.http_redirect_port == 8080
    assert settings.acme_directory.startswith("https://acme-staging-v02.")


def test_without_acme_nothing_changes() -> None:
    settings = Settings.from_env({})
    assert not settings.acme_enabled
    assert settings.http_redirect_port is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MCP_ACME_DOMAINS": "memory.example.com"}, "needs MCP_HTTPS_ENABLED=true"),
        (
            {
                "MCP_HTTPS_ENABLED": "true",
                "MCP_ACME_DOMAINS": "memory.example.com",
                "MCP_SSL_CERT_FILE": "/c.pem",
                "MCP_SSL_KEY_FILE": "/k.pem",
            },
            "exclude each other",
        ),
        ({"MCP_HTTPS_ENABLED": "true", "MCP_ACME_DOMAINS": "*.example.com"}, "not a DNS name"),
        ({"MCP_HTTPS_ENABLED": "true", "MCP_ACME_DOMAINS": "192.0.2.1"}, "not a DNS name"),
        ({"MCP_HTTPS_ENABLED": "true", "MCP_ACME_DOMAINS": "localhost"}, "not a DNS name"),
        (
            {
                "MCP_HTTPS_ENABLED": "true",
                "MCP_ACME_DOMAINS": "memory.example.com",
                "MCP_ACME_DIRECTORY": "http://acme.example.com/dir",
            },
            "must be an https:// URL",
        ),
        (
            {
                "MCP_HTTPS_ENABLED": "true",
                "MCP_ACME_DOMAINS": "memory.example.com",
                "MCP_ACME_EMAIL": "not-an-address",
            },
            "e-mail address",
        ),
        (
            {
                "MCP_HTTPS_ENABLED": "true",
                "MCP_ACME_DOMAINS": "memory.example.com",
                "MCP_ACME_CA_FILE": "/nonexistent/ca.pem",
            },
            "no such file",
        ),
        ({"MCP_HTTPS_ENABLED": "true"}, "or MCP_ACME_DOMAINS"),
    ],
)
def test_bad_acme_configuration_is_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({**KEY, **env})
