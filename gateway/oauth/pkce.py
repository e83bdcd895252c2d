"""PKCE (RFC 7636): S256 only (PROTOCOL A3)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from gateway.errors import InvalidRequest

# RFC 7636 §4.1 and §4.2: 43 to 128 unreserved characters.
_VALUE = re.compile(r"[A-Za-z0-9\-._~]{43,128}")


def validate_challenge(challenge: str | None, method: str | None, *, required: bool) -> str | None:
    """The challenge to bind to the code, or InvalidRequest."""
    if challenge is None:
        if method is not None:
            raise InvalidRequest("code_challenge_method without code_challenge")
        if required:
            raise InvalidRequest("PKCE code_challenge is required for this client")
        return None
    if method != "S256":
        raise InvalidRequest("code_challenge_method must be S256")
    if not _VALUE.fullmatch(challenge):
        raise InvalidRequest("malformed code_challenge")
    return challenge


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def verifier_matches(verifier: str, challenge: str) -> bool:
    if not _VALUE.fullmatch(verifier):
        return False
    return hmac.compare_digest(s256(verifier), challenge)
