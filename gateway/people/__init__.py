"""People: sign-in through an identity provider (MCP_OAUTH_CONSENT=oidc|github),
admission, per-person scopes, browser sessions and connected apps."""
