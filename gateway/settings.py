"""Gateway settings: one frozen dataclass built from the environment and CLI flags.

The environment names of the seed document are kept (`MCP_OAUTH_*`, `MCP_HTTPS_*`,
`MCP_SSL_*`, `MCP_API_KEY`); a flag wins over the environment. Validation happens
here, at start-up, so a bad value stops the process with a clear message.

Every default is written once, on the `Settings` class; reading the environment takes
an unset variable's value from `_DEFAULT` (the class defaults), converted to the
variable's unit where it has one (minutes, days).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypedDict
from urllib.parse import urlsplit

from gateway.edge import EdgeLimits
from gateway.errors import InternalError

ConsentMode = Literal["auto", "api_key", "oidc", "github"]
LogFormat = Literal["json", "text"]
MIN_API_KEY_LENGTH = 16
STORAGE_SCHEMES = ("sqlite:///", "redis://", "rediss://")
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
LETS_ENCRYPT_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"
LETS_ENCRYPT_STAGING_DIRECTORY = "https://acme-staging-v02.api.letsencrypt.org/directory"
# The listener's defaults, which the default issuer and storage are derived from.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_HTTPS_PORT = 8443
DEFAULT_STATE_DIR = Path("state")


class SettingsError(InternalError, ValueError):
    """A configuration value is missing, malformed or inconsistent."""


def derive_issuer(https: bool, host: str, port: int) -> str:
    """The issuer when none is configured: never from a request's Host header."""
    scheme = "https" if https else "http"
    wildcard = {"0.0.0.0", "::", "127.0.0.1", "localhost", ""}  # noqa: S104
    name = "localhost" if host in wildcard else host
    if ":" in name and not name.startswith("["):
        name = f"[{name}]"
    default_port = 443 if https else 80
    return f"{scheme}://{name}" if port == default_port else f"{scheme}://{name}:{port}"


def sqlite_storage(state_dir: Path) -> str:
    """The storage when none is configured: a SQLite file in the state directory."""
    return f"sqlite:///{state_dir / 'oauth.db'}"


@dataclass(frozen=True)
class Settings:
    oauth_enabled: bool = True
    secret_key: str | None = field(default=None, repr=False)
    issuer: str = derive_issuer(False, DEFAULT_HOST, DEFAULT_PORT)
    access_token_ttl: int = 3600
    code_ttl: int = 600
    refresh_token_ttl: int = 30 * 24 * 3600
    refresh_grace_seconds: int = 10
    https_enabled: bool = False
    cert_file: Path | None = None
    key_file: Path | None = None
    api_key: str | None = field(default=None, repr=False)
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    upstream: str = "http://127.0.0.1:8001"
    state_dir: Path = DEFAULT_STATE_DIR
    # repr=False: a Redis URL may carry its password; secrets never show in repr/str.
    storage: str = field(default=sqlite_storage(DEFAULT_STATE_DIR), repr=False)
    consent: ConsentMode = "auto"
    dcr_registration_key: str | None = field(default=None, repr=False)
    policy_file: Path | None = None
    trusted_proxies: tuple[str, ...] = ()
    allowed_redirect_schemes: tuple[str, ...] = ()
    cimd_enabled: bool = True
    cimd_allow_private: bool = False
    cimd_ca_file: Path | None = None
    hsts: bool = False
    http_redirect_port: int | None = None
    rate_limit_per_minute: int = 60
    max_clients: int = 10_000
    max_form_bytes: int = 64 * 1024
    upstream_connect_timeout: float = 5.0
    upstream_header_timeout: float = 60.0
    upstream_idle_timeout: float = 300.0
    log_level: str = "info"
    # issue 15: the upstream's own credential, and how often its tool list is re-read
    upstream_api_key: str | None = field(default=None, repr=False)
    tools_refresh: float = 300.0
    cimd_dir: Path | None = None
    cimd_stale_seconds: int = 7 * 86400
    # People (MCP_OAUTH_CONSENT=oidc|github): see _people() and gateway/people/.
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: str | None = field(default=None, repr=False)
    oidc_scopes: str = "openid email profile"
    oidc_groups_claim: str = "groups"
    oidc_require_email_verified: bool = True
    github_client_id: str | None = None
    github_client_secret: str | None = field(default=None, repr=False)
    github_url: str = "https://github.com"
    github_api_url: str = "https://api.github.com"
    allowed_emails: tuple[str, ...] = ()
    allowed_domains: tuple[str, ...] = ()
    allowed_groups: tuple[str, ...] = ()
    admin_groups: tuple[str, ...] = ()
    allowed_github_users: tuple[str, ...] = ()
    allowed_github_orgs: tuple[str, ...] = ()
    session_ttl: int = 8 * 3600
    consent_remember_ttl: int = 30 * 86400
    provider_timeout: float = 10.0
    # Operations (metrics, request log, drain, workers)
    metrics_addr: tuple[str, int] | None = None
    log_format: LogFormat = "text"
    request_log: bool = True
    drain_seconds: float = 10.0
    workers: int = 1
    # ACME (gateway/acme/): certificates obtained and renewed automatically.
    acme_domains: tuple[str, ...] = ()
    acme_directory: str = LETS_ENCRYPT_DIRECTORY
    acme_email: str | None = None
    acme_ca_file: Path | None = None
    acme_retry_seconds: float = 60.0

    # The edge (connection budgets), the Origin allow-list and the protocol fast path.
    edge: EdgeLimits = field(default_factory=EdgeLimits)
    allowed_origins: tuple[str, ...] = ()
    fast_path: bool = True

    @property
    def acme_enabled(self) -> bool:
        return bool(self.acme_domains)

    @property
    def resource(self) -> str:
        """The protected resource identifier (RFC 8707 / RFC 9728) of the MCP endpoint."""
        return f"{self.issuer}/mcp"

    @property
    def issuer_is_loopback(self) -> bool:
        return (urlsplit(self.issuer).hostname or "") in LOOPBACK_HOSTS

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], overrides: Mapping[str, object] | None = None
    ) -> Settings:
        return _build(env, dict(overrides or {}))


_DEFAULT = Settings()
MINUTE, DAY = 60, 86400


def _build(env: Mapping[str, str], flags: dict[str, object]) -> Settings:
    reader = _Reader(env, flags)
    d = _DEFAULT
    https = reader.boolean("https_enabled", "MCP_HTTPS_ENABLED", d.https_enabled)
    host = reader.text("host", "MCP_HTTP_HOST") or d.host
    port = reader.integer(
        "port", "MCP_HTTP_PORT", DEFAULT_HTTPS_PORT if https else d.port, low=1, high=65535
    )
    named_dir = reader.text("state_dir", "MCP_GATEWAY_STATE_DIR")
    state_dir = Path(named_dir) if named_dir else d.state_dir
    api_key = reader.text("api_key", "MCP_API_KEY")
    cert_file = reader.path("cert_file", "MCP_SSL_CERT_FILE")
    key_file = reader.path("key_file", "MCP_SSL_KEY_FILE")
    acme = _acme(reader, https, cert_file, key_file)
    issuer = normalise_issuer(
        reader.text("issuer", "MCP_OAUTH_ISSUER")
        or (f"https://{acme['acme_domains'][0]}" if acme else derive_issuer(https, host, port))
    )
    if https and not acme and (cert_file is None or key_file is None):
        raise SettingsError(
            "MCP_HTTPS_ENABLED=true needs MCP_SSL_CERT_FILE and MCP_SSL_KEY_FILE, or "
            "MCP_ACME_DOMAINS (run `memory-gateway certs` for development certificates)"
        )
    redirect_port = reader.optional_integer(
        "http_redirect_port", "MCP_HTTP_REDIRECT_PORT", low=1, high=65535
    )
    if acme and redirect_port is None:
        redirect_port = 80  # HTTP-01 validation arrives on port 80
    settings = Settings(
        oauth_enabled=reader.boolean("oauth_enabled", "MCP_OAUTH_ENABLED", d.oauth_enabled),
        secret_key=reader.text("secret_key", "MCP_OAUTH_SECRET_KEY"),
        issuer=issuer,
        access_token_ttl=MINUTE
        * reader.integer(
            "access_minutes",
            "MCP_OAUTH_ACCESS_TOKEN_EXPIRE_MINUTES",
            d.access_token_ttl // MINUTE,
            low=1,
        ),
        code_ttl=MINUTE
        * reader.integer(
            "code_minutes",
            "MCP_OAUTH_AUTHORIZATION_CODE_EXPIRE_MINUTES",
            d.code_ttl // MINUTE,
            low=1,
            high=60,
        ),
        refresh_token_ttl=DAY
        * reader.integer(
            "refresh_days", "MCP_OAUTH_REFRESH_TOKEN_EXPIRE_DAYS", d.refresh_token_ttl // DAY, low=1
        ),
        refresh_grace_seconds=reader.integer(
            "refresh_grace",
            "MCP_OAUTH_REFRESH_GRACE_SECONDS",
            d.refresh_grace_seconds,
            low=0,
            high=300,
        ),
        https_enabled=https,
        cert_file=cert_file,
        key_file=key_file,
        api_key=api_key,
        host=host,
        port=port,
        upstream=_upstream(reader.text("upstream", "MCP_GATEWAY_UPSTREAM") or d.upstream),
        state_dir=state_dir,
        storage=_storage(reader.text("storage", "MCP_OAUTH_STORAGE") or sqlite_storage(state_dir)),
        consent=_consent(reader.text("consent", "MCP_OAUTH_CONSENT"), api_key, issuer),
        dcr_registration_key=reader.text("dcr_registration_key", "MCP_DCR_REGISTRATION_KEY"),
        policy_file=reader.path("policy_file", "MCP_GATEWAY_POLICY"),
        trusted_proxies=_proxies(reader.words("trusted_proxies", "MCP_GATEWAY_TRUSTED_PROXIES")),
        allowed_redirect_schemes=tuple(
            s.lower().rstrip(":")
            for s in reader.words("redirect_schemes", "MCP_OAUTH_ALLOWED_REDIRECT_SCHEMES")
        ),
        cimd_enabled=reader.boolean("cimd_enabled", "MCP_OAUTH_CIMD_ENABLED", d.cimd_enabled),
        cimd_allow_private=reader.boolean(
            "cimd_allow_private", "MCP_OAUTH_CIMD_ALLOW_PRIVATE", d.cimd_allow_private
        ),
        cimd_ca_file=reader.path("cimd_ca_file", "MCP_OAUTH_CIMD_CA_FILE"),
        hsts=reader.boolean("hsts", "MCP_HTTPS_HSTS", d.hsts),
        http_redirect_port=redirect_port,
        rate_limit_per_minute=reader.integer(
            "rate_limit", "MCP_OAUTH_RATE_LIMIT_PER_MINUTE", d.rate_limit_per_minute, low=0
        ),
        max_clients=reader.integer("max_clients", "MCP_OAUTH_MAX_CLIENTS", d.max_clients, low=1),
        upstream_connect_timeout=reader.number(
            "connect_timeout", "MCP_GATEWAY_CONNECT_TIMEOUT", d.upstream_connect_timeout
        ),
        upstream_header_timeout=reader.number(
            "header_timeout", "MCP_GATEWAY_RESPONSE_TIMEOUT", d.upstream_header_timeout
        ),
        upstream_idle_timeout=reader.number(
            "idle_timeout", "MCP_GATEWAY_IDLE_TIMEOUT", d.upstream_idle_timeout
        ),
        log_level=(reader.text("log_level", "MCP_GATEWAY_LOG_LEVEL") or d.log_level).lower(),
        upstream_api_key=_upstream_key(
            reader.text("upstream_api_key", "MCP_GATEWAY_UPSTREAM_API_KEY")
        ),
        tools_refresh=reader.number("tools_refresh", "MCP_GATEWAY_TOOLS_REFRESH", d.tools_refresh),
        cimd_dir=reader.path("cimd_dir", "MCP_OAUTH_CIMD_DIR"),
        cimd_stale_seconds=reader.integer(
            "cimd_stale", "MCP_OAUTH_CIMD_STALE_SECONDS", d.cimd_stale_seconds, low=0, high=90 * DAY
        ),
        **_people(reader),
        **_operations(reader),
        **acme,
        edge=_edge(reader),
        allowed_origins=_origins(reader.words("allowed_origins", "MCP_GATEWAY_ALLOWED_ORIGINS")),
        fast_path=reader.boolean("fast_path", "MCP_GATEWAY_FAST_PATH", d.fast_path),
    )
    if settings.api_key is not None and len(settings.api_key) < MIN_API_KEY_LENGTH:
        raise SettingsError(
            f"MCP_API_KEY must be at least {MIN_API_KEY_LENGTH} characters (it approves "
            "consent and grants read write admin); make one with: "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    if settings.secret_key is not None and len(settings.secret_key.encode()) < 32:
        raise SettingsError("MCP_OAUTH_SECRET_KEY must be at least 32 bytes for HS256")
    _check_people(settings)
    _check_metrics_port(settings)
    return settings


class _Operations(TypedDict):
    metrics_addr: tuple[str, int] | None
    log_format: LogFormat
    request_log: bool
    drain_seconds: float
    workers: int


def _operations(reader: _Reader) -> _Operations:
    """MCP_GATEWAY_METRICS_ADDR, _LOG_FORMAT, _REQUEST_LOG, _DRAIN_SECONDS, _WORKERS."""
    metrics = reader.text("metrics_addr", "MCP_GATEWAY_METRICS_ADDR")
    address = None
    if metrics is not None and metrics.lower() not in {"off", "false", "0", "none"}:
        try:
            address = parse_address(metrics)
        except ValueError as exc:
            raise SettingsError(f"MCP_GATEWAY_METRICS_ADDR: {exc}") from None
    log_format: LogFormat
    named = (reader.text("log_format", "MCP_GATEWAY_LOG_FORMAT") or _DEFAULT.log_format).lower()
    if named == "json":
        log_format = "json"
    elif named == "text":
        log_format = "text"
    else:
        raise SettingsError(f"MCP_GATEWAY_LOG_FORMAT must be 'json' or 'text', got {named!r}")
    return {
        "metrics_addr": address,
        "log_format": log_format,
        "request_log": reader.boolean(
            "request_log", "MCP_GATEWAY_REQUEST_LOG", _DEFAULT.request_log
        ),
        "drain_seconds": reader.number(
            "drain_seconds", "MCP_GATEWAY_DRAIN_SECONDS", _DEFAULT.drain_seconds
        ),
        "workers": reader.integer(
            "workers", "MCP_GATEWAY_WORKERS", _DEFAULT.workers, low=1, high=64
        ),
    }


def parse_address(value: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `:port` (loopback); ValueError otherwise."""
    host, sep, port = value.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _check_metrics_port(settings: Settings) -> None:
    """The metrics listener never shares the public port (or the redirect port)."""
    if settings.metrics_addr is None:
        return
    port = settings.metrics_addr[1]
    if port in (settings.port, settings.http_redirect_port):
        raise SettingsError(
            f"MCP_GATEWAY_METRICS_ADDR must not use the gateway's public port {port}: "
            "metrics are served on a listener of their own"
        )


_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def _acme(
    reader: _Reader, https: bool, cert_file: Path | None, key_file: Path | None
) -> dict[str, Any]:
    """The MCP_ACME_* block; empty when MCP_ACME_DOMAINS is unset."""
    domains = tuple(dict.fromkeys(d.lower().rstrip(".") for d in reader.words(
        "acme_domains", "MCP_ACME_DOMAINS"
    )))  # fmt: skip
    if not domains:
        return {}
    if not https:
        raise SettingsError("MCP_ACME_DOMAINS needs MCP_HTTPS_ENABLED=true")
    if cert_file is not None or key_file is not None:
        raise SettingsError(
            "MCP_ACME_DOMAINS and MCP_SSL_CERT_FILE/MCP_SSL_KEY_FILE exclude each other: "
            "the certificate comes either from ACME or from the files"
        )
    for domain in domains:
        labels = domain.split(".")
        if (
            len(domain) > 253
            or len(labels) < 2
            or not all(_DNS_LABEL.match(label) for label in labels)
            or labels[-1].isdigit()
        ):
            raise SettingsError(
                f"MCP_ACME_DOMAINS: {domain!r} is not a DNS name (HTTP-01 validates names, "
                "not IP addresses or wildcards)"
            )
    directory = reader.text("acme_directory", "MCP_ACME_DIRECTORY") or _DEFAULT.acme_directory
    if urlsplit(directory).scheme != "https" or not urlsplit(directory).hostname:
        raise SettingsError(f"MCP_ACME_DIRECTORY must be an https:// URL, got {directory!r}")
    email = reader.text("acme_email", "MCP_ACME_EMAIL")
    if email is not None and not re.fullmatch(r"[^@\s:]+@[^@\s:]+\.[^@\s:]+", email):
        raise SettingsError(f"MCP_ACME_EMAIL must be an e-mail address, got {email!r}")
    ca_file = reader.path("acme_ca_file", "MCP_ACME_CA_FILE")
    if ca_file is not None and not ca_file.is_file():
        raise SettingsError(f"MCP_ACME_CA_FILE: no such file {str(ca_file)!r}")
    return {
        "acme_domains": domains,
        "acme_directory": directory,
        "acme_email": email,
        "acme_ca_file": ca_file,
        "acme_retry_seconds": reader.number(
            "acme_retry", "MCP_ACME_RETRY_SECONDS", _DEFAULT.acme_retry_seconds
        ),
    }


def normalise_issuer(value: str) -> str:
    """D1: origin only, lower-case scheme and host, no trailing slash, no default port."""
    parts = urlsplit(value.strip())
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise SettingsError(f"MCP_OAUTH_ISSUER must be an http(s) origin, got {value!r}")
    if parts.query or parts.fragment or parts.path not in {"", "/"}:
        raise SettingsError(
            f"MCP_OAUTH_ISSUER must be an origin without path, query or fragment: {value!r}"
        )
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    default = 443 if parts.scheme == "https" else 80
    origin = f"{parts.scheme}://{host}"
    return origin if port in (None, default) else f"{origin}:{port}"


def _consent(value: str | None, api_key: str | None, issuer: str) -> ConsentMode:
    if value == "auto":
        return "auto"
    if value == "oidc":
        return "oidc"
    if value == "github":
        return "github"
    if value == "api_key":
        if not api_key:
            raise SettingsError("MCP_OAUTH_CONSENT=api_key needs MCP_API_KEY to approve consent")
        return "api_key"
    if value:
        raise SettingsError(
            f"MCP_OAUTH_CONSENT must be 'auto', 'api_key', 'oidc' or 'github', got {value!r}"
        )
    if api_key:
        return "api_key"
    if (urlsplit(issuer).hostname or "") in LOOPBACK_HOSTS:
        return "auto"
    raise SettingsError(
        "the issuer is not loopback and no consent method is configured: set MCP_API_KEY "
        "(consent approved with the key) or MCP_OAUTH_CONSENT=auto (approves every request)"
    )


def _people(reader: _Reader) -> dict[str, Any]:
    """The sign-in settings (MCP_OAUTH_CONSENT=oidc|github), read as one block."""
    oidc_issuer = reader.text("oidc_issuer", "MCP_OIDC_ISSUER")
    d = _DEFAULT
    return {
        "oidc_issuer": oidc_issuer.rstrip("/") if oidc_issuer else None,
        "oidc_client_id": reader.text("oidc_client_id", "MCP_OIDC_CLIENT_ID"),
        "oidc_client_secret": reader.text("oidc_client_secret", "MCP_OIDC_CLIENT_SECRET"),
        "oidc_scopes": " ".join(reader.words("oidc_scopes", "MCP_OIDC_SCOPES")) or d.oidc_scopes,
        "oidc_groups_claim": reader.text("oidc_groups_claim", "MCP_OIDC_GROUPS_CLAIM")
        or d.oidc_groups_claim,
        "oidc_require_email_verified": reader.boolean(
            "oidc_require_email_verified",
            "MCP_OIDC_REQUIRE_EMAIL_VERIFIED",
            d.oidc_require_email_verified,
        ),
        "github_client_id": reader.text("github_client_id", "MCP_GITHUB_CLIENT_ID"),
        "github_client_secret": reader.text("github_client_secret", "MCP_GITHUB_CLIENT_SECRET"),
        "github_url": (reader.text("github_url", "MCP_GITHUB_URL") or d.github_url).rstrip("/"),
        "github_api_url": (
            reader.text("github_api_url", "MCP_GITHUB_API_URL") or d.github_api_url
        ).rstrip("/"),
        "allowed_emails": tuple(
            w.lower() for w in reader.words("allowed_emails", "MCP_OAUTH_ALLOWED_EMAILS")
        ),
        "allowed_domains": tuple(
            w.lower().lstrip("@")
            for w in reader.words("allowed_domains", "MCP_OAUTH_ALLOWED_DOMAINS")
        ),
        "allowed_groups": reader.words("allowed_groups", "MCP_OAUTH_ALLOWED_GROUPS"),
        "admin_groups": reader.words("admin_groups", "MCP_OAUTH_ADMIN_GROUPS"),
        "allowed_github_users": tuple(
            w.lower()
            for w in reader.words("allowed_github_users", "MCP_OAUTH_ALLOWED_GITHUB_USERS")
        ),
        "allowed_github_orgs": tuple(
            w.lower() for w in reader.words("allowed_github_orgs", "MCP_OAUTH_ALLOWED_GITHUB_ORGS")
        ),
        "session_ttl": MINUTE
        * reader.integer(
            "session_minutes",
            "MCP_OAUTH_SESSION_MINUTES",
            d.session_ttl // MINUTE,
            low=5,
            high=43200,
        ),
        "consent_remember_ttl": DAY
        * reader.integer(
            "consent_remember_days",
            "MCP_OAUTH_CONSENT_REMEMBER_DAYS",
            d.consent_remember_ttl // DAY,
            low=0,
            high=365,
        ),
        "provider_timeout": reader.number(
            "provider_timeout", "MCP_OIDC_TIMEOUT", d.provider_timeout
        ),
    }


def _check_people(settings: Settings) -> None:
    if settings.consent == "oidc":
        missing = [
            name
            for name, value in (
                ("MCP_OIDC_ISSUER", settings.oidc_issuer),
                ("MCP_OIDC_CLIENT_ID", settings.oidc_client_id),
                ("MCP_OIDC_CLIENT_SECRET", settings.oidc_client_secret),
            )
            if not value
        ]
        if missing:
            raise SettingsError(f"MCP_OAUTH_CONSENT=oidc needs {', '.join(missing)}")
        assert settings.oidc_issuer is not None
        parts = urlsplit(settings.oidc_issuer)
        loopback = (parts.hostname or "") in LOOPBACK_HOSTS
        if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
            raise SettingsError(
                f"MCP_OIDC_ISSUER must be an https URL (http only on loopback), "
                f"got {settings.oidc_issuer!r}"
            )
        if "openid" not in settings.oidc_scopes.split():
            raise SettingsError("MCP_OIDC_SCOPES must include openid")
    if settings.consent == "github" and not (
        settings.github_client_id and settings.github_client_secret
    ):
        raise SettingsError(
            "MCP_OAUTH_CONSENT=github needs MCP_GITHUB_CLIENT_ID and MCP_GITHUB_CLIENT_SECRET"
        )
    if settings.consent in ("oidc", "github") and not settings.issuer.startswith("https://"):
        raise SettingsError(
            f"MCP_OAUTH_CONSENT={settings.consent} needs an https issuer: the browser session "
            "cookie is a __Host- cookie, which browsers keep only over HTTPS"
        )


def _storage(url: str) -> str:
    if url.startswith(STORAGE_SCHEMES) and url not in STORAGE_SCHEMES:
        return url
    if url in {"memory", "memory://"}:
        return url
    raise SettingsError(
        "MCP_OAUTH_STORAGE must be sqlite:///PATH, redis://HOST:PORT/DB, rediss://... or "
        f"memory:// (tests only), got {url.split('://', 1)[0]!r}"
    )


def _upstream(value: str) -> str:
    url = value.rstrip("/")
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise SettingsError(f"MCP_GATEWAY_UPSTREAM must be an http:// URL, got {url!r}")
    if parts.path or parts.query:
        raise SettingsError(f"MCP_GATEWAY_UPSTREAM must be an origin without path: {url!r}")
    return url


def _upstream_key(value: str | None) -> str | None:
    """Sent as `Authorization: Bearer <key>`: a header value, so printable ASCII only."""
    if value is None:
        return None
    if not all(0x21 <= ord(c) < 0x7F for c in value):
        raise SettingsError(
            "MCP_GATEWAY_UPSTREAM_API_KEY must be printable ASCII without spaces "
            "(it is sent as an Authorization header)"
        )
    return value


def _proxies(values: tuple[str, ...]) -> tuple[str, ...]:
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError as exc:
            raise SettingsError(f"MCP_GATEWAY_TRUSTED_PROXIES: {exc}") from None
    return values


def _edge(reader: _Reader) -> EdgeLimits:
    d = EdgeLimits()
    return EdgeLimits(
        head_timeout=reader.number("head_timeout", "MCP_GATEWAY_HEAD_TIMEOUT", d.head_timeout),
        body_idle_timeout=reader.number(
            "body_idle_timeout", "MCP_GATEWAY_BODY_IDLE_TIMEOUT", d.body_idle_timeout
        ),
        body_timeout=reader.number("body_timeout", "MCP_GATEWAY_BODY_TIMEOUT", d.body_timeout),
        send_timeout=reader.number("send_timeout", "MCP_GATEWAY_SEND_TIMEOUT", d.send_timeout),
        keepalive_timeout=reader.number(
            "keepalive_timeout", "MCP_GATEWAY_KEEPALIVE_TIMEOUT", d.keepalive_timeout
        ),
        max_head_bytes=reader.integer(
            "max_head_bytes", "MCP_GATEWAY_MAX_HEAD_BYTES", d.max_head_bytes, low=1024
        ),
        max_pipelined=reader.integer(
            "max_pipelined", "MCP_GATEWAY_MAX_PIPELINED", d.max_pipelined, low=1
        ),
        max_connections=reader.integer(
            "max_connections", "MCP_GATEWAY_MAX_CONNECTIONS", d.max_connections, low=1
        ),
        max_connections_per_address=reader.integer(
            "max_connections_per_address",
            "MCP_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS",
            d.max_connections_per_address,
            low=1,
        ),
    )


def _origins(values: tuple[str, ...]) -> tuple[str, ...]:
    """MCP_GATEWAY_ALLOWED_ORIGINS: origins (scheme://host[:port]) compared as D1 issuers."""
    origins = []
    for value in values:
        try:
            origins.append(normalise_issuer(value))
        except SettingsError:
            raise SettingsError(
                f"MCP_GATEWAY_ALLOWED_ORIGINS: {value!r} is not an http(s) origin"
            ) from None
    return tuple(origins)


class _Reader:
    def __init__(self, env: Mapping[str, str], flags: dict[str, object]) -> None:
        self.env = env
        self.flags = flags

    def raw(self, flag: str, name: str) -> tuple[str, str | None]:
        value = self.flags.get(flag)
        if value is not None:
            return f"--{flag.replace('_', '-')}", str(value)
        text = self.env.get(name)
        return name, (text.strip() if text is not None and text.strip() else None)

    def text(self, flag: str, name: str) -> str | None:
        return self.raw(flag, name)[1]

    def path(self, flag: str, name: str) -> Path | None:
        value = self.text(flag, name)
        return Path(value) if value else None

    def words(self, flag: str, name: str) -> tuple[str, ...]:
        value = self.text(flag, name) or ""
        return tuple(w for w in value.replace(",", " ").split() if w)

    def boolean(self, flag: str, name: str, default: bool) -> bool:
        label, value = self.raw(flag, name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise SettingsError(f"{label} must be true or false, got {value!r}")

    def integer(
        self,
        flag: str,
        name: str,
        default: int,
        *,
        low: int | None = None,
        high: int | None = None,
    ) -> int:
        value = self.optional_integer(flag, name, low=low, high=high)
        return default if value is None else value

    def optional_integer(
        self, flag: str, name: str, *, low: int | None = None, high: int | None = None
    ) -> int | None:
        label, value = self.raw(flag, name)
        if value is None:
            return None
        try:
            number = int(value)
        except ValueError:
            raise SettingsError(f"{label} must be a whole number, got {value!r}") from None
        if (low is not None and number < low) or (high is not None and number > high):
            raise SettingsError(f"{label} must be between {low} and {high}, got {number}")
        return number

    def number(self, flag: str, name: str, default: float) -> float:
        label, value = self.raw(flag, name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise SettingsError(f"{label} must be a number, got {value!r}") from None
        if number <= 0:
            raise SettingsError(f"{label} must be positive, got {number}")
        return number
