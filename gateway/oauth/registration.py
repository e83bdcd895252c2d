"""Dynamic client registration (RFC 7591, PROTOCOL R1-R3) as pure rules.

Who registers decides what the client may do. An operator registration (the initial
access token or the API key as Bearer) may ask for `client_credentials` and `admin`; a
registration without `redirect_uris` then defaults to a `client_credentials` client.

An open (anonymous) registration gets redirect-based grants only, since those pass
through the consent page: `client_credentials` is refused and `admin` is dropped from
its scope (RFC 7591 §3.2.1 lets the server replace requested values). Without
`redirect_uris` it is registered with no grant type at all, so the seed's
`{"client_name": "Test Client"}` still answers 201, yet no token can be obtained
with it until an RFC 7592 update adds redirect URIs (and then only through consent).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gateway.errors import InvalidClientMetadata, InvalidRedirectUri, InvalidScope
from gateway.models import AuthMethod, Client
from gateway.oauth.redirects import validate_redirect_uri
from gateway.oauth.scopes import format_scope, parse_scope

AUTH_METHODS: tuple[AuthMethod, ...] = ("client_secret_basic", "client_secret_post", "none")
GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
REDIRECT_GRANTS = ("authorization_code", "refresh_token")
DEFAULT_SCOPE = "read write offline_access"
DEFAULT_MACHINE_SCOPE = "read write"
OPERATOR_ONLY_SCOPES = frozenset({"admin"})
ECHOED_STRINGS = (
    "client_uri",
    "logo_uri",
    "tos_uri",
    "policy_uri",
    "software_id",
    "software_version",
)
MAX_REDIRECT_URIS = 20
MAX_TEXT = 2000


def client_from_metadata(
    data: Mapping[str, object],
    *,
    client_id: str,
    issued_at: int,
    allowed_schemes: Iterable[str] = (),
    trusted: bool = False,
) -> Client:
    """A Client from registration metadata; unknown fields are ignored (RFC 7591 §2).

    `trusted`: the registration presented an operator credential (see module doc).
    """
    redirect_uris = _redirect_uris(data.get("redirect_uris"), allowed_schemes)
    method = _auth_method(data.get("token_endpoint_auth_method"))
    grant_types = _grant_types(data, redirect_uris, trusted)
    default_responses = ("code",) if "authorization_code" in grant_types else ()
    response_types = _words(data, "response_types", default_responses)
    _check_consistency(redirect_uris, method, grant_types, response_types)
    return Client(
        client_id=client_id,
        redirect_uris=redirect_uris,
        token_endpoint_auth_method=method,
        grant_types=grant_types,
        response_types=response_types,
        scope=_scope(data.get("scope"), grant_types, trusted),
        client_name=_text(data, "client_name"),
        client_id_issued_at=issued_at,
        trusted=trusted,
        metadata=_echoed(data),
    )


def _grant_types(
    data: Mapping[str, object], redirect_uris: tuple[str, ...], trusted: bool
) -> tuple[str, ...]:
    machine_default = ("client_credentials",) if trusted else ()
    grant_types = _words(data, "grant_types", REDIRECT_GRANTS if redirect_uris else machine_default)
    if not set(grant_types) <= set(GRANT_TYPES):
        raise InvalidClientMetadata(f"unsupported grant_types: {list(grant_types)}")
    if "client_credentials" in grant_types and not trusted:
        raise InvalidClientMetadata(
            "client_credentials is only for clients registered with an operator credential"
        )
    return grant_types


def client_document(client: Client) -> dict[str, object]:
    """The registered metadata, as echoed by registration and RFC 7592 reads (no nulls)."""
    document: dict[str, object] = {
        "client_id": client.client_id,
        "client_id_issued_at": client.client_id_issued_at,
        "token_endpoint_auth_method": client.token_endpoint_auth_method,
        "grant_types": list(client.grant_types),
        "response_types": list(client.response_types),
        "scope": client.scope,
    }
    if client.redirect_uris:
        document["redirect_uris"] = list(client.redirect_uris)
    if client.client_name is not None:
        document["client_name"] = client.client_name
    return {**client.metadata, **document}


def _check_consistency(
    redirect_uris: tuple[str, ...],
    method: AuthMethod,
    grant_types: tuple[str, ...],
    response_types: tuple[str, ...],
) -> None:
    if set(response_types) - {"code"}:
        raise InvalidClientMetadata("only the 'code' response type is supported")
    if ("authorization_code" in grant_types) != ("code" in response_types):
        raise InvalidClientMetadata("grant_types and response_types are inconsistent")
    if "authorization_code" in grant_types and not redirect_uris:
        raise InvalidRedirectUri("redirect_uris is required for the authorization_code grant")
    if "client_credentials" in grant_types and method == "none":
        raise InvalidClientMetadata("client_credentials needs a confidential client")


def _redirect_uris(value: object, allowed_schemes: Iterable[str]) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(u, str) for u in value):
        raise InvalidRedirectUri("redirect_uris must be an array of strings")
    if len(value) > MAX_REDIRECT_URIS or any(len(u) > MAX_TEXT for u in value):
        raise InvalidRedirectUri("too many or too long redirect_uris")
    schemes = tuple(allowed_schemes)
    return tuple(dict.fromkeys(validate_redirect_uri(u, schemes) for u in value))


def _auth_method(value: object) -> AuthMethod:
    if value is None:
        return "client_secret_basic"
    for method in AUTH_METHODS:
        if value == method:
            return method
    raise InvalidClientMetadata(f"unsupported token_endpoint_auth_method: {value!r}")


def _words(data: Mapping[str, object], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = data.get(name)
    if value is None:
        return default
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidClientMetadata(f"{name} must be an array of strings")
    return tuple(dict.fromkeys(value))


def _scope(value: object, grant_types: tuple[str, ...], trusted: bool) -> str:
    if value is None:
        redirect = "authorization_code" in grant_types
        return DEFAULT_SCOPE if redirect else DEFAULT_MACHINE_SCOPE
    if not isinstance(value, str):
        raise InvalidClientMetadata("scope must be a space-separated string")
    try:
        scopes = parse_scope(value)
    except InvalidScope as exc:
        raise InvalidClientMetadata(exc.description) from None
    if not scopes - {"offline_access"}:
        raise InvalidClientMetadata("scope must include at least one of read, write, admin")
    if not trusted:
        scopes -= OPERATOR_ONLY_SCOPES
        if not scopes - {"offline_access"}:
            raise InvalidClientMetadata("admin needs a registration with an operator credential")
    return format_scope(scopes)


def _text(data: Mapping[str, object], name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise InvalidClientMetadata(f"{name} must be a string of at most {MAX_TEXT} characters")
    return value


def _echoed(data: Mapping[str, object]) -> dict[str, object]:
    echoed: dict[str, object] = {}
    for name in ECHOED_STRINGS:
        text = _text(data, name)
        if text is not None:
            echoed[name] = text
    contacts = data.get("contacts")
    if isinstance(contacts, list) and all(isinstance(c, str) for c in contacts):
        echoed["contacts"] = contacts[:10]
    return echoed
