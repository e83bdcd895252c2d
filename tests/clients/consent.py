"""The user's part of an authorization request, played headlessly.

`HeadlessUserAgent` stands in for the browser a real MCP client opens: it follows the
authorize URL, approves the consent form with the operator's API key when the gateway
asks for one, and captures the redirect back to the client's loopback callback
(code, state and the RFC 9207 `iss`) without listening on that port.
"""

from __future__ import annotations

import html.parser
import ssl
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx


class AuthorizationFailed(AssertionError):
    """The authorization server did not send the user agent back with a code."""


@dataclass(frozen=True)
class Redirect:
    """Where the authorization server sent the user agent, and its query parameters."""

    location: str
    params: dict[str, str]


@dataclass
class ConsentForm:
    action: str
    fields: dict[str, str]


class _FormParser(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form" and self.action is None:
            self.action = values.get("action", "")
        if tag == "input" and values.get("type") == "hidden" and "name" in values:
            self.fields[values["name"]] = values.get("value", "")


def parse_consent_form(page: str, page_url: str) -> ConsentForm:
    """The consent page's form action (absolute) and hidden inputs."""
    parser = _FormParser()
    parser.feed(page)
    if parser.action is None:
        raise AuthorizationFailed("the consent page has no form")
    return ConsentForm(urljoin(page_url, parser.action or page_url), parser.fields)


def redirect_params(location: str) -> dict[str, str]:
    """The single-valued query parameters of a redirect; a repeated one is an error."""
    query = parse_qs(urlsplit(location).query, keep_blank_values=True)
    repeated = [name for name, values in query.items() if len(values) != 1]
    if repeated:
        raise AuthorizationFailed(f"repeated redirect parameters {repeated}: {location}")
    return {name: values[0] for name, values in query.items()}


@dataclass
class HeadlessUserAgent:
    """Follows authorize URLs like a browser; approves consent with `api_key` if asked."""

    verify: ssl.SSLContext
    api_key: str | None = None
    visited: list[str] = field(default_factory=list)

    async def authorize(self, url: str) -> Redirect:
        self.visited.append(url)
        async with httpx.AsyncClient(verify=self.verify, timeout=15) as http:
            response = await http.get(url, headers={"Accept": "text/html"})
            if response.status_code == 200 and "<form" in response.text:
                response = await self._approve(http, response)
        if response.status_code not in (302, 303) or "location" not in response.headers:
            raise AuthorizationFailed(
                f"authorize answered {response.status_code}, not a redirect: {response.text[:300]}"
            )
        location = response.headers["location"]
        return Redirect(location, redirect_params(location))

    async def _approve(self, http: httpx.AsyncClient, page: httpx.Response) -> httpx.Response:
        if self.api_key is None:
            raise AuthorizationFailed("the gateway asks for consent and no API key was given")
        form = parse_consent_form(page.text, str(page.url))
        fields = {**form.fields, "api_key": self.api_key, "decision": "approve"}
        return await http.post(form.action, data=fields)
