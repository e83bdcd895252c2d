"""The consent page (PROTOCOL A6): names the client, its redirect host and the scopes.

The form carries only an opaque pending-request id stored server-side and taken once,
so a forged or replayed form cannot approve anything.
"""

from __future__ import annotations

import unicodedata
from html import escape
from urllib.parse import unquote

from starlette.responses import HTMLResponse

from gateway.errors import OAuthError
from gateway.oauth.redirects import redirect_host, redirect_origin

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}


def consent_headers(redirect_uri: str) -> dict[str, str]:
    """PAGE_HEADERS with `form-action` also allowing the client's redirect target.

    Chromium applies `form-action` to the redirects that follow a form submission, so
    `'self'` alone blocks the 302 from the consent POST to the client (CSP3 §6.3.1.1).
    """
    origin = redirect_origin(redirect_uri)
    if origin is None:
        return PAGE_HEADERS
    csp = PAGE_HEADERS["Content-Security-Policy"].replace(
        "form-action 'self'", f"form-action 'self' {origin}"
    )
    return {**PAGE_HEADERS, "Content-Security-Policy": csp}


STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:34em;margin:3em auto;padding:0 1em;"
    "line-height:1.5;color:#222}li{margin:.3em 0}code{background:#f2f2f2;padding:0 .3em}"
    "input{font-size:1em;padding:.3em;width:100%;box-sizing:border-box}"
    "button{font-size:1em;padding:.4em 1.2em;margin-right:.5em}.warn{color:#a00}"
)
SCOPE_MEANINGS = {
    "read": "read and search your memories",
    "write": "store, change and delete memories",
    "admin": "administer the memory service",
    "offline_access": "stay connected without asking again (refresh tokens)",
}


def display_text(value: str) -> str:
    """`value` safe to show a person: control and format characters (bidi overrides
    and isolates such as U+202E, zero-width ones, line separators) become U+FFFD, so a
    client name cannot reorder or hide the words around it. HTML escaping is separate."""
    return "".join(
        "\ufffd" if unicodedata.category(c) in {"Cc", "Cf", "Zl", "Zp"} else c for c in value
    )


def shown_host(redirect_uri: str) -> str:
    """The redirect URI's host as a browser will go to it: percent-encoding decoded
    (`%65vil.example` is evil.example to a WHATWG parser), made displayable."""
    return display_text(unquote(redirect_host(redirect_uri)))


def consent_page(
    *,
    consent_id: str,
    client_name: str,
    redirect_uri: str,
    scope: str,
    failed: bool = False,
    person: str | None = None,
) -> HTMLResponse:
    """The page; `person` (a signed-in person's email or name) replaces the API-key
    field: that person approves for themselves."""
    scopes = "".join(
        f"<li><code>{escape(s)}</code> {escape(SCOPE_MEANINGS.get(s, ''))}</li>"
        for s in scope.split()
    )
    warning = '<p class="warn"><strong>Wrong API key; try again.</strong></p>' if failed else ""
    client_name = display_text(client_name)
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Authorize {escape(client_name)}</title>
<style>{STYLE}</style></head><body>
<h1>Authorize access</h1>
<p><strong>{escape(client_name)}</strong> asks for access to this memory service.
After approval you are sent back to <strong>{escape(shown_host(redirect_uri))}</strong>.</p>
<p>It may:</p><ul>{scopes}</ul>{warning}
<form method="post" action="/oauth/authorize/consent">
<input type="hidden" name="consent_id" value="{escape(consent_id)}">
{_approver(person)}
<p><button type="submit" name="decision" value="approve">Approve</button>
<button type="submit" name="decision" value="deny">Deny</button></p>
</form></body></html>"""
    status = 401 if failed else 200
    return HTMLResponse(body, status_code=status, headers=consent_headers(redirect_uri))


def _approver(person: str | None) -> str:
    if person is not None:
        return (
            f"<p>Signed in as <strong>{escape(person)}</strong> "
            '(<a href="/oauth/logout">not you?</a>).</p>'
        )
    return """<p><label>Approve with the gateway's API key<br>
<input type="password" name="api_key" autocomplete="current-password" autofocus></label></p>"""


def error_page(error: OAuthError) -> HTMLResponse:
    """The 400 page for a request that must not be redirected (A1)."""
    text = escape(error.description or error.error)
    body = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Authorization '
        f"error</title><style>{STYLE}</style></head><body><h1>Authorization error</h1>"
        f"<p><code>{escape(error.error)}</code>: {text}</p></body></html>"
    )
    return HTMLResponse(body, status_code=400, headers=PAGE_HEADERS)
