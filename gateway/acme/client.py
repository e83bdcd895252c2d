"""The one module that talks to the `acme` library (certbot's ACME client).

Everything the gateway uses from it is here, so a change in the library shows up in one
place. What this relies on beyond the documented API, checked at start-up by version
(`issuer.check_library`, before this module is imported):
`ClientNetwork(verify_ssl=...)` is passed to `requests` as `verify`, so a CA bundle path
works there (MCP_ACME_CA_FILE). Only HTTP-01 is used: the acme library no longer ships
TLS-ALPN-01 helpers (5.x has none), and Python's `ssl` cannot see a ClientHello's ALPN list before
choosing the certificate, which that challenge needs.

The library is synchronous (`requests`); the manager calls this from a daemon thread.
Every request has a timeout and every poll a deadline.
"""

from __future__ import annotations

import datetime
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from acme import challenges, client, crypto_util, errors, messages
from cryptography.hazmat.primitives.asymmetric import rsa
from josepy import jwk

from gateway.acme.issuer import ORDER_DEADLINE, AcmeError, Issued
from gateway.acme.store import AcmeStore, new_private_key_pem

log = logging.getLogger("gateway.acme")

REQUEST_TIMEOUT = 10
USER_AGENT = "memory-gateway"


class AcmeClient:
    """An account at one ACME directory, created on first use and kept in the store."""

    def __init__(
        self, directory_url: str, store: AcmeStore, email: str | None, ca_file: Path | None
    ) -> None:
        self.directory_url = directory_url
        self._store, self._email = store, email
        self._verify: bool | str = str(ca_file) if ca_file is not None else True
        self._client: client.ClientV2 | None = None

    def obtain(self, domains: tuple[str, ...]) -> Issued:
        """Order a certificate for `domains`, answering HTTP-01 through the store."""
        try:
            return self._order(domains)
        except AcmeError as exc:
            cause = exc.__cause__
            if not (isinstance(cause, messages.Error) and cause.code == "accountDoesNotExist"):
                raise
        # The CA no longer knows the stored account (a reset private CA): register anew.
        log.warning("ACME: the CA does not know the stored account; registering a new one")
        self._store.forget_account(self.directory_url)
        self._client = None
        return self._order(domains)

    def _order(self, domains: tuple[str, ...]) -> Issued:
        acme = self._connect()
        key_pem = new_private_key_pem()
        csr = crypto_util.make_csr(key_pem, list(domains))
        published: list[str] = []
        try:
            order = _call(self.directory_url, "new order", lambda: acme.new_order(csr))
            for authz in order.authorizations:
                if authz.body.status == messages.STATUS_VALID:
                    continue  # the CA reused an earlier authorization
                challenge = _http01(authz)
                response, validation = challenge.response_and_validation(acme.net.key)
                token = challenge.chall.encode("token")
                self._store.publish_challenge(token, validation)
                published.append(token)
                _answer(self.directory_url, acme, challenge, response)
            deadline = datetime.datetime.now() + ORDER_DEADLINE
            done = _call(
                self.directory_url, "finalize", lambda: acme.poll_and_finalize(order, deadline)
            )
        finally:
            for token in published:
                self._store.withdraw_challenge(token)
        return Issued(done.fullchain_pem.encode(), key_pem)

    def renewal_info(self, chain_pem: bytes) -> tuple[datetime.datetime | None, datetime.datetime]:
        """ARI: (when to renew or None if the CA offers no ARI, when to ask again), UTC."""
        acme = self._connect()
        try:
            when, ask_again = acme.renewal_time(chain_pem)
        except errors.ARIError as exc:
            log.warning("ACME renewal information unavailable: %s", exc.__cause__ or exc)
            when, ask_again = None, exc.retry_after
        # The library gives "ask again" as a naive local time.
        ask_again = ask_again.astimezone(datetime.UTC)
        return (when.astimezone(datetime.UTC) if when else None), ask_again

    def _connect(self) -> client.ClientV2:
        if self._client is not None:
            return self._client
        stored = self._store.read_account(self.directory_url)
        if stored is not None:
            key = jwk.JWK.json_loads(stored["key"])
        else:
            key = jwk.JWKRSA(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
        net = client.ClientNetwork(
            key,
            verify_ssl=self._verify,  # type: ignore[arg-type]  # a CA path, see module doc
            user_agent=USER_AGENT,
            timeout=REQUEST_TIMEOUT,
        )
        url = self.directory_url
        directory = _call(url, "directory", lambda: client.ClientV2.get_directory(url, net))
        acme = client.ClientV2(directory, net)
        if stored is not None and stored.get("url"):
            net.account = messages.RegistrationResource(
                body=messages.Registration(), uri=stored["url"]
            )
        else:
            account_url = self._register(acme)
            self._store.write_account(url, {"key": key.json_dumps(), "url": account_url})
            log.info("ACME account registered at %s: %s", url, account_url)
        self._client = acme
        return acme

    def _register(self, acme: client.ClientV2) -> str:
        registration = messages.NewRegistration.from_data(
            email=self._email, terms_of_service_agreed=True
        )
        try:
            account = _call(
                self.directory_url, "new account", lambda: acme.new_account(registration)
            )
        except AcmeError as exc:
            if isinstance(exc.__cause__, errors.ConflictError):  # the key has an account
                location: str = exc.__cause__.location
                acme.net.account = messages.RegistrationResource(
                    body=messages.Registration(), uri=location
                )
                return location
            raise
        return str(account.uri)


def _answer(
    directory: str,
    acme: client.ClientV2,
    challenge: messages.ChallengeBody,
    response: challenges.ChallengeResponse,
) -> None:
    _call(directory, "answer challenge", lambda: acme.answer_challenge(challenge, response))


def _http01(authz: messages.AuthorizationResource) -> messages.ChallengeBody:
    for challenge in authz.body.challenges:
        if isinstance(challenge.chall, challenges.HTTP01):
            return challenge
    name = authz.body.identifier.value
    raise AcmeError(f"the ACME server offers no http-01 challenge for {name}")


def _call(directory: str, step: str, action: Callable[[], Any]) -> Any:
    """Run one ACME exchange, turning the library's errors into one readable line."""
    try:
        return action()
    except errors.ValidationError as exc:
        raise AcmeError(f"validation failed: {_failures(exc)}") from exc
    except errors.IssuanceError as exc:
        raise AcmeError(f"{step}: the CA refused: {_problem(exc.error)}") from exc
    except errors.TimeoutError as exc:
        raise AcmeError(f"{step}: no answer within {ORDER_DEADLINE.seconds} s") from exc
    except messages.Error as exc:
        raise AcmeError(f"{step}: {_problem(exc)}") from exc
    except requests.exceptions.SSLError as exc:
        raise AcmeError(
            f"{step}: TLS to the ACME server {directory} failed (MCP_ACME_CA_FILE?): {exc}"
        ) from exc
    except requests.exceptions.RequestException as exc:
        raise AcmeError(f"{step}: cannot reach the ACME server {directory}: {_short(exc)}") from exc
    except errors.Error as exc:
        raise AcmeError(f"{step}: {exc}") from exc


def _failures(exc: errors.ValidationError) -> str:
    parts = []
    for authz in exc.failed_authzrs:
        problems = [_problem(c.error) for c in authz.body.challenges if c.error is not None]
        parts.append(f"{authz.body.identifier.value}: {'; '.join(problems) or 'invalid'}")
    return ", ".join(parts)


def _problem(error: messages.Error) -> str:
    code = error.typ.rsplit(":", 1)[-1] if error.typ else "error"
    return f"{code}: {error.detail}" if error.detail else code


_OS_ERROR = re.compile(r"\[Errno -?\d+\] [^'\")\]]+|timed out|Name or service not known")


def _short(exc: Exception) -> str:
    """The operating system's reason (connection refused, timed out) when there is one."""
    text = str(exc)
    found = _OS_ERROR.search(text)
    if found:
        return found.group(0).strip()
    return text if len(text) <= 300 else text[:297] + "..."
