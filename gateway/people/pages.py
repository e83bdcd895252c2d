"""The people pages: refusals, provider trouble, connected apps, sign-out."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from starlette.responses import HTMLResponse

from gateway.oauth.consent import PAGE_HEADERS, STYLE, consent_headers


def page(
    title: str,
    body: str,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    cookies: Sequence[str] = (),
) -> HTMLResponse:
    html = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}'
        f"</title><style>{STYLE}</style></head><body><h1>{escape(title)}</h1>{body}</body></html>"
    )
    response = HTMLResponse(html, status_code=status, headers=dict(headers or PAGE_HEADERS))
    for cookie in cookies:
        response.headers.append("set-cookie", cookie)
    return response


def refused(
    who: str, reason: str, back: str | None, client_name: str | None, cookies: Sequence[str] = ()
) -> HTMLResponse:
    """403: a person the gateway does not admit; `back` returns `access_denied` to the app."""
    link = (
        f'<p><a href="{escape(back)}">Return to {escape(client_name or "the application")}</a> '
        "(it is told that access was denied).</p>"
        if back
        else ""
    )
    body = (
        f"<p>You are signed in at the identity provider as <strong>{escape(who)}</strong>, "
        f"but this memory service does not admit you: {escape(reason)}.</p>"
        "<p>Ask the operator to add your address, domain or group.</p>" + link
    )
    headers = consent_headers(back) if back else PAGE_HEADERS
    return page("Access denied", body, status=403, headers=headers, cookies=cookies)


def trouble(message: str, *, status: int, provider: str) -> HTMLResponse:
    """The provider is down or answered something unusable (never a bare 500)."""
    body = (
        f"<p>Signing in through <code>{escape(provider)}</code> did not work: "
        f"{escape(message)}.</p><p>Nothing was granted. Go back to the application and try "
        "again in a moment; if it keeps happening, tell the operator.</p>"
    )
    headers = {**PAGE_HEADERS, "Retry-After": "30"} if status == 503 else PAGE_HEADERS
    return page("Sign-in failed", body, status=status, headers=headers)


def bad_callback(message: str) -> HTMLResponse:
    body = (
        f"<p>This sign-in cannot be completed: {escape(message)}.</p>"
        "<p>Start again from the application.</p>"
    )
    return page("Sign-in failed", body, status=400)


def apps_page(
    who: str, grants: Sequence[Mapping[str, Any]], csrf: str, cookies: Sequence[str] = ()
) -> HTMLResponse:
    rows = "".join(
        "<tr>"
        f"<td><strong>{escape(str(g.get('client_name') or g['client_id']))}</strong><br>"
        f"<code>{escape(str(g['client_id']))}</code></td>"
        f"<td>{escape(str(g.get('scope', '')))}</td>"
        f"<td>{_when(g.get('approved_at'))}</td><td>{_when(g.get('last_used'))}</td>"
        '<td><form method="post" action="/oauth/apps/revoke">'
        f'<input type="hidden" name="client_id" value="{escape(str(g["client_id"]))}">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
        '<button type="submit">Revoke</button></form></td></tr>'
        for g in grants
    )
    table = (
        "<table><tr><th>Application</th><th>Scopes</th><th>Approved</th><th>Last used</th>"
        f"<th></th></tr>{rows}</table>"
        if grants
        else "<p>You have not approved any application.</p>"
    )
    body = (
        f"<p>Signed in as <strong>{escape(who)}</strong>.</p>{table}"
        '<form method="post" action="/oauth/logout">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
        '<p><button type="submit">Sign out</button></p></form>'
    )
    return page("Connected apps", body, cookies=cookies)


def signed_out(cookies: Sequence[str]) -> HTMLResponse:
    return page("Signed out", "<p>You are signed out of this memory service.</p>", cookies=cookies)


def logout_form(csrf: str) -> HTMLResponse:
    body = (
        '<form method="post" action="/oauth/logout">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
        '<p><button type="submit">Sign out</button></p></form>'
    )
    return page("Sign out", body)


def _when(value: object) -> str:
    if not isinstance(value, int | float):
        return "never"
    return escape(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(value)))
