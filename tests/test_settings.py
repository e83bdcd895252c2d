import dataclasses
from pathlib import Path

import pytest

from gateway.settings import Settings, SettingsError, derive_issuer, normalise_issuer


def test_seed_defaults_match_the_seed_document() -> None:
    settings = Settings.from_env({})
    assert settings.oauth_enabled is True
    assert settings.access_token_ttl == 3600
    assert settings.code_ttl == 600
    assert settings.issuer == "http://localhost:8000"
    assert settings.resource == "http://localhost:8000/mcp"
    assert settings.consent == "auto"
    assert settings.storage == f"sqlite:///{Path('state') / 'oauth.db'}"


def test_seed_environment_names_are_read() -> None:
    env = {
        "MCP_OAUTH_ENABLED": "false",
        "MCP_OAUTH_SECRET_KEY": "x" * 32,
        "MCP_OAUTH_ISSUER": "https://Memory.Example.com/",
        "MCP_OAUTH_ACCESS_TOKEN_EXPIRE_MINUTES": "5",
        "MCP_OAUTH_AUTHORIZATION_CODE_EXPIRE_MINUTES": "2",
        "MCP_HTTPS_ENABLED": "true",
        "MCP_SSL_CERT_FILE": "/c.pem",
        "MCP_SSL_KEY_FILE": "/k.pem",
        "MCP_API_KEY": "k" * 20,
    }
    settings = Settings.from_env(env)
    assert settings.oauth_enabled is False
    assert settings.secret_key == "x" * 32
    assert settings.issuer == "https://memory.example.com"
    assert settings.access_token_ttl == 300
    assert settings.code_ttl == 120
    assert settings.https_enabled is True
    assert settings.port == 8443
    assert settings.cert_file == Path("/c.pem")
    assert settings.consent == "api_key"


def test_a_flag_wins_over_the_environment() -> None:
    settings = Settings.from_env({"MCP_HTTP_PORT": "9000"}, {"port": 9100})
    assert settings.port == 9100
    assert settings.issuer == "http://localhost:9100"


@pytest.mark.parametrize(
    ("raw", "issuer"),
    [
        ("https://host:8443/", "https://host:8443"),
        ("HTTPS://HOST:443", "https://host"),
        ("http://127.0.0.1:80", "http://127.0.0.1"),
        ("https://[::1]:8443", "https://[::1]:8443"),
    ],
)
def test_d1_issuer_is_an_origin_without_trailing_slash(raw: str, issuer: str) -> None:
    assert normalise_issuer(raw) == issuer


@pytest.mark.parametrize(
    "raw", ["ftp://host", "https://host/path", "https://host?x=1", "https://", "host:8443"]
)
def test_d1_issuer_with_path_or_bad_scheme_is_refused(raw: str) -> None:
    with pytest.raises(SettingsError):
        normalise_issuer(raw)


@pytest.mark.parametrize(
    ("https", "host", "port", "issuer"),
    [
        (True, "0.0.0.0", 8443, "https://localhost:8443"),
        (True, "gw.example.com", 443, "https://gw.example.com"),
        (False, "127.0.0.1", 8000, "http://localhost:8000"),
        (False, "::1", 8000, "http://[::1]:8000"),
    ],
)
def test_issuer_is_derived_from_the_listener_never_a_request(
    https: bool, host: str, port: int, issuer: str
) -> None:
    assert derive_issuer(https, host, port) == issuer


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MCP_HTTPS_ENABLED": "true"}, "MCP_SSL_CERT_FILE"),
        ({"MCP_OAUTH_ENABLED": "maybe"}, "true or false"),
        ({"MCP_HTTP_PORT": "http"}, "whole number"),
        ({"MCP_HTTP_PORT": "70000"}, "between"),
        ({"MCP_OAUTH_SECRET_KEY": "short"}, "32 bytes"),
        ({"MCP_OAUTH_CONSENT": "yes"}, "'auto', 'api_key', 'oidc' or 'github'"),
        ({"MCP_OAUTH_CONSENT": "api_key"}, "needs MCP_API_KEY"),
        ({"MCP_OAUTH_ISSUER": "https://memory.example.com"}, "no consent method"),
        ({"MCP_GATEWAY_UPSTREAM": "https://backend:8001"}, "http:// URL"),
        ({"MCP_GATEWAY_UPSTREAM": "http://backend:8001/api"}, "without path"),
        ({"MCP_GATEWAY_TRUSTED_PROXIES": "10.0.0.0/8 nonsense"}, "TRUSTED_PROXIES"),
        ({"MCP_OAUTH_STORAGE": "postgres://db/oauth"}, "MCP_OAUTH_STORAGE"),
        ({"MCP_API_KEY": "short-key"}, "at least 16 characters"),
        ({"MCP_OAUTH_STORAGE": "sqlite:///"}, "MCP_OAUTH_STORAGE"),
    ],
)
def test_bad_configuration_stops_start_up_with_a_clear_message(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_a6_public_issuer_with_explicit_auto_consent_is_allowed() -> None:
    settings = Settings.from_env(
        {"MCP_OAUTH_ISSUER": "https://memory.example.com", "MCP_OAUTH_CONSENT": "auto"}
    )
    assert settings.consent == "auto"
    assert settings.issuer_is_loopback is False


def test_upstream_key_and_tool_and_cimd_settings_are_read() -> None:
    settings = Settings.from_env(
        {
            "MCP_GATEWAY_UPSTREAM_API_KEY": "upstream-secret-0123456789",
            "MCP_GATEWAY_TOOLS_REFRESH": "60",
            "MCP_OAUTH_CIMD_DIR": "/etc/memory-gateway/cimd",
            "MCP_OAUTH_CIMD_STALE_SECONDS": "0",
        }
    )
    assert settings.upstream_api_key == "upstream-secret-0123456789"
    assert "upstream-secret" not in repr(settings)
    assert settings.tools_refresh == 60.0
    assert settings.cimd_dir == Path("/etc/memory-gateway/cimd")
    assert settings.cimd_stale_seconds == 0
    defaults = Settings.from_env({})
    assert defaults.upstream_api_key is None
    assert defaults.cimd_dir is None
    assert defaults.cimd_stale_seconds == 7 * 86400


@pytest.mark.parametrize("value", ["with space", "tab\there", "ünïcode"])
def test_upstream_key_must_be_a_header_token(value: str) -> None:
    with pytest.raises(SettingsError, match="MCP_GATEWAY_UPSTREAM_API_KEY"):
        Settings.from_env({"MCP_GATEWAY_UPSTREAM_API_KEY": value})


def test_no_secret_appears_in_repr_or_str() -> None:
    """Settings end up in logs and tracebacks: no secret value may show in them."""
    secrets = {
        "MCP_OAUTH_SECRET_KEY": "secret-key-" + "s" * 32,
        "MCP_API_KEY": "api-key-" + "a" * 32,
        "MCP_DCR_REGISTRATION_KEY": "dcr-key-" + "d" * 32,
        "MCP_GATEWAY_UPSTREAM_API_KEY": "upstream-key-" + "u" * 32,
        "MCP_OIDC_CLIENT_SECRET": "oidc-secret-" + "o" * 32,
        "MCP_GITHUB_CLIENT_SECRET": "github-secret-" + "g" * 32,
    }
    password = "redis-password-" + "r" * 16
    settings = Settings.from_env(
        {
            **secrets,
            "MCP_OAUTH_CONSENT": "api_key",
            "MCP_OIDC_ISSUER": "https://login.example.com",
            "MCP_OIDC_CLIENT_ID": "gateway",
            "MCP_GITHUB_CLIENT_ID": "Ov23li",
            "MCP_OAUTH_STORAGE": f"redis://:{password}@127.0.0.1:6379/0",
        }
    )
    assert settings.api_key == secrets["MCP_API_KEY"]
    assert settings.github_client_secret == secrets["MCP_GITHUB_CLIENT_SECRET"]
    assert settings.oidc_client_secret == secrets["MCP_OIDC_CLIENT_SECRET"]
    assert password in settings.storage
    shown = repr(settings) + str(settings)
    for value in [*secrets.values(), password]:
        assert value not in shown


def test_the_class_defaults_are_the_environment_defaults() -> None:
    """Settings' defaults are written in the class and again in `from_env`; this keeps the
    two from drifting: an empty environment gives the class defaults, field by field,
    except the fields derived from others (state dir, issuer)."""
    from_env = Settings.from_env({})
    derived = {"storage", "state_dir", "consent", "issuer"}
    differ = {
        field.name: (getattr(Settings(), field.name), getattr(from_env, field.name))
        for field in dataclasses.fields(Settings)
        if field.name not in derived
        and getattr(Settings(), field.name) != getattr(from_env, field.name)
    }
    assert differ == {}
