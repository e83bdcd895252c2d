"""Discovery documents (PROTOCOL D1-D4, D8): RFC 8414, OIDC aliases, RFC 9728, JWKS.

Built once at start-up as plain dicts; optional fields are omitted, never null.
"""

from __future__ import annotations

from gateway.models import RESOURCE_SCOPES, SUPPORTED_SCOPES
from gateway.settings import Settings

AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
JWKS_PATH = "/oauth/jwks"


def authorization_server_metadata(settings: Settings, *, cimd: bool) -> dict[str, object]:
    issuer = settings.issuer
    document: dict[str, object] = {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/oauth/authorize",
        "token_endpoint": f"{issuer}/oauth/token",
        "registration_endpoint": f"{issuer}/oauth/register",
        "revocation_endpoint": f"{issuer}/oauth/revoke",
        "introspection_endpoint": f"{issuer}/oauth/introspect",
        "jwks_uri": f"{issuer}{JWKS_PATH}",
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
        "introspection_endpoint_auth_methods_supported": AUTH_METHODS[:2],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": list(SUPPORTED_SCOPES),
        "authorization_response_iss_parameter_supported": True,
    }
    if cimd:
        document["client_id_metadata_document_supported"] = True
    return document


def openid_configuration(settings: Settings, *, cimd: bool, algorithm: str) -> dict[str, object]:
    """The same document plus the fields OpenID discovery requires."""
    return {
        **authorization_server_metadata(settings, cimd=cimd),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [algorithm],
    }


def protected_resource_metadata(settings: Settings, *, root: bool = False) -> dict[str, object]:
    """RFC 9728. The document at the root well-known path describes the resource named
    by the origin, the one under `/mcp` the resource `{issuer}/mcp` (§3.3: `resource`
    must equal the URL the document was derived from); both mean the same audience."""
    return {
        "resource": settings.issuer if root else settings.resource,
        "authorization_servers": [settings.issuer],
        "scopes_supported": list(RESOURCE_SCOPES),
        "bearer_methods_supported": ["header"],
        "resource_name": "memory-gateway",
    }
