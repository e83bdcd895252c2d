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
    """Every default is written once, on the class, and reading an empty environment
    gives exactly it: the unit conversions (minutes, days) round-trip and the derived
    fields (issuer, state dir, storage, consent) derive the class's own values."""
    assert Settings.from_env({}) == Settings()


# Variables whose README default is a rule rather than a value to set.
CONDITIONAL_DEFAULTS = {"MCP_OAUTH_CONSENT": "api_key with MCP_API_KEY, auto without"}


def readme_defaults() -> dict[str, str]:
    """The configuration table's variables whose default is a literal (`60`, `true`):
    a `/`-separated row (`MCP_X_A` / `_B`) names one variable per default."""
    readme = Path(__file__).resolve().parent.parent / "README.md"
    found: dict[str, str] = {}
    for line in readme.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`MCP_"):
            continue
        names = [name.strip().strip("`") for name in cells[0].split(" / ")]
        first = names[0]
        names = [
            f"{'_'.join(first.split('_')[: -name.count('_')])}{name}"
            if name.startswith("_")
            else name
            for name in names
        ]
        parts = cells[1].split(" / ") if len(names) > 1 else [cells[1]]
        for name, part in zip(names, parts, strict=False):
            value = part.split("`")[1] if part.startswith("`") else None
            if value is not None and "<" not in value and name not in CONDITIONAL_DEFAULTS:
                found[name] = value
    return found


def test_the_readme_defaults_are_the_defaults() -> None:
    """README's configuration table agrees with the one source of defaults: setting a
    variable to the default the table gives changes nothing."""
    defaults = readme_defaults()
    source = (Path(__file__).resolve().parent.parent / "gateway" / "settings.py").read_text()
    assert len(defaults) >= 30, sorted(defaults)
    differ = {}
    for name, value in defaults.items():
        assert f'"{name}"' in source, f"{name} is not read by gateway/settings.py"
        explicit = Settings.from_env({name: value})
        if explicit != Settings():
            differ[name] = value
    assert differ == {}
