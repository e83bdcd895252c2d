"""Each authorization-server handler is built with what it uses and nothing else
(docs/architecture.md): no catch-all bag of dependencies, no `Settings`, no field the
handler never reads. The handlers are taken from a built server's routes, so a new
route or grant is checked without being listed here."""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import inspect
import textwrap
from collections.abc import Iterator

from starlette.applications import Starlette
from starlette.routing import Route

from gateway.authserver import AuthorizationServer, build_authorization_server
from gateway.oauth.keys import hs256_ring
from gateway.oauth.token import TokenHandler
from gateway.oauth.tokens import TokenService
from gateway.settings import Settings
from tests.people.test_in_process import settings as people_settings


def handlers(server: AuthorizationServer) -> Iterator[object]:
    """The objects behind the server's routes (bound `__call__`s and People's methods),
    the token endpoint's grants, and what those hold that is itself a dataclass."""
    app = server.app.app  # type: ignore[attr-defined]  # inside PublicCorsMiddleware
    assert isinstance(app, Starlette)
    seen: dict[int, object] = {}
    for route in app.routes:
        assert isinstance(route, Route)
        owner = getattr(route.endpoint, "__self__", None)
        if owner is not None and dataclasses.is_dataclass(owner):
            seen[id(owner)] = owner
            if isinstance(owner, TokenHandler):
                seen.update((id(grant), grant) for grant in owner.grants.values())
    for owner in list(seen.values()):
        for field in dataclasses.fields(owner):  # type: ignore[arg-type]
            value = getattr(owner, field.name)
            if dataclasses.is_dataclass(value) and value.__module__.startswith("gateway.oauth"):
                seen[id(value)] = value  # the shared parts (Approval, ...) too
    yield from seen.values()


def read_fields(cls: type) -> set[str]:
    """The names read as `self.<name>` anywhere in the class body."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
    }


def check(server: AuthorizationServer) -> list[str]:
    problems = []
    for owner in handlers(server):
        cls = type(owner)
        used = read_fields(cls)
        for field in dataclasses.fields(owner):  # type: ignore[arg-type]
            value = getattr(owner, field.name)
            if isinstance(value, Settings):
                problems.append(f"{cls.__name__}.{field.name} is the whole Settings")
            elif type(value).__module__ == "gateway.authserver":
                problems.append(f"{cls.__name__}.{field.name} is the wiring's own record")
            if field.name not in used:
                problems.append(f"{cls.__name__}.{field.name} is never read")
    return problems


def server(settings: Settings) -> AuthorizationServer:
    ring = hs256_ring("x" * 32)
    tokens = TokenService(ring, issuer=settings.issuer, ttl=settings.access_token_ttl)
    return build_authorization_server(settings, tokens=tokens)


def test_the_context_bag_is_gone() -> None:
    assert importlib.util.find_spec("gateway.oauth.context") is None


def test_every_oauth_handler_gets_only_what_it_uses() -> None:
    built = server(
        Settings(
            issuer="https://gw.example",
            consent="api_key",
            api_key="operator-api-key-0123456789",
            storage="memory://",
        )
    )
    names = {type(owner).__name__ for owner in handlers(built)}
    # The walk reaches every endpoint, every grant and the shared answers.
    assert {
        "RegisterHandler",
        "ClientConfigurationHandler",
        "ClientInfoHandler",
        "AuthorizeHandler",
        "ConsentHandler",
        "TokenHandler",
        "RevokeHandler",
        "IntrospectHandler",
        "AuthorizationCodeGrant",
        "RefreshTokenGrant",
        "ClientCredentialsGrant",
        "Approval",
        "ClientFinder",
        "ClientAuthenticator",
        "PeerLimit",
    } <= names
    assert check(built) == []


def test_people_get_only_what_they_use() -> None:
    built = server(people_settings())
    assert "People" in {type(owner).__name__ for owner in handlers(built)}
    assert check(built) == []


def test_the_check_finds_a_bag() -> None:
    """The check itself: a handler holding the settings, or a field it never reads, is
    reported (so the tests above can fail)."""

    @dataclasses.dataclass(frozen=True)
    class Bagged:
        settings: Settings
        unused: int

        async def __call__(self) -> str:
            return self.settings.issuer

    built = server(Settings(issuer="https://gw.example", consent="auto", storage="memory://"))
    app = built.app.app  # type: ignore[attr-defined]
    app.router.routes.append(Route("/bagged", Bagged(Settings(), 1).__call__))
    assert check(built) == [
        "Bagged.settings is the whole Settings",
        "Bagged.unused is never read",
    ]
