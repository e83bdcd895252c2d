#!/usr/bin/env bash
# The OAuth flow with curl, step by step, against a running gateway.
#   scripts/test_oauth_flow.sh [BASE_URL]        (default https://localhost:8443)
# Env: CACERT (default certs/dev-ca.pem when it exists), API_KEY (approve a consent page).
set -euo pipefail

BASE=${1:-https://localhost:8443}
CACERT=${CACERT:-}
if [ -z "$CACERT" ] && [ -f certs/dev-ca.pem ]; then CACERT=certs/dev-ca.pem; fi
CURL=(curl --silent --show-error)
if [ -n "$CACERT" ]; then CURL+=(--cacert "$CACERT"); fi
REDIRECT=http://127.0.0.1:33418/callback

json() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
step() { printf 'ok  %s\n' "$*"; }
fail() { printf 'FAILED: %s\n' "$*" >&2; exit 1; }

meta=$("${CURL[@]}" --fail "$BASE/.well-known/oauth-authorization-server/mcp")
issuer=$(json issuer <<<"$meta")
step "discovery: issuer $issuer"

status=$("${CURL[@]}" -o /dev/null -w '%{http_code}' "$BASE/mcp")
[ "$status" = 401 ] || fail "unauthenticated /mcp gave $status"
step "unauthenticated /mcp: 401"

client=$("${CURL[@]}" --fail -X POST "$BASE/oauth/register" -H "Content-Type: application/json" \
  -d "{\"client_name\": \"curl flow\", \"redirect_uris\": [\"$REDIRECT\"],
       \"token_endpoint_auth_method\": \"none\", \"scope\": \"read write offline_access\"}")
client_id=$(json client_id <<<"$client")
step "registration: $client_id"

verifier=$(openssl rand 48 | b64url)
challenge=$(printf '%s' "$verifier" | openssl dgst -sha256 -binary | b64url)
state=$(openssl rand 12 | b64url)
query="response_type=code&client_id=$client_id&state=$state&code_challenge=$challenge"
query+="&code_challenge_method=S256&scope=read%20write%20offline_access"
query+="&redirect_uri=$(python3 -c 'import sys,urllib.parse as u; print(u.quote(sys.argv[1], safe=""))' "$REDIRECT")"
location=$("${CURL[@]}" -o /dev/null -w '%{redirect_url}' "$BASE/oauth/authorize?$query")
if [ -z "$location" ] && [ -n "${API_KEY:-}" ]; then
  page=$("${CURL[@]}" "$BASE/oauth/authorize?$query")
  form=$(python3 - "$page" <<'PY'
import html.parser, sys, urllib.parse
class Form(html.parser.HTMLParser):
    action, fields = None, {}
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = a.get("action") or ""
        if tag == "input" and a.get("type") == "hidden":
            self.fields[a["name"]] = a.get("value") or ""
form = Form(); form.feed(sys.argv[1])
print(form.action or "")
print(urllib.parse.urlencode(form.fields))
PY
)
  action=$(sed -n 1p <<<"$form"); fields=$(sed -n 2p <<<"$form")
  [ -n "$action" ] || fail "the authorize page has no consent form"
  location=$("${CURL[@]}" -o /dev/null -w '%{redirect_url}' -X POST "$BASE$action" \
    --data "$fields" --data-urlencode "api_key=$API_KEY" --data "decision=approve")
fi
[ -n "$location" ] || fail "authorize did not redirect (consent needed? set API_KEY)"
code=$(python3 -c 'import sys,urllib.parse as u; q=u.parse_qs(u.urlsplit(sys.argv[1]).query); assert q["state"]==[sys.argv[2]], "state"; print(q["code"][0])' "$location" "$state")
step "authorize: code issued"

tokens=$("${CURL[@]}" --fail -X POST "$BASE/oauth/token" \
  --data grant_type=authorization_code --data "code=$code" --data "client_id=$client_id" \
  --data-urlencode "redirect_uri=$REDIRECT" --data "code_verifier=$verifier")
access=$(json access_token <<<"$tokens")
refresh=$(json refresh_token <<<"$tokens")
step "token: $(json scope <<<"$tokens")"

"${CURL[@]}" --fail -H "Authorization: Bearer $access" -H "Content-Type: application/json" \
  -X POST "$BASE/api/memories" -d '{"content": "stored by test_oauth_flow.sh", "tags": ["curl"]}' >/dev/null
"${CURL[@]}" --fail -H "Authorization: Bearer $access" "$BASE/api/memories?tag=curl" >/dev/null
step "protected API: stored and listed a memory"

renewed=$("${CURL[@]}" --fail -X POST "$BASE/oauth/token" --data grant_type=refresh_token \
  --data "refresh_token=$refresh" --data "client_id=$client_id")
access=$(json access_token <<<"$renewed")
step "refresh: rotated"

"${CURL[@]}" --fail -X POST "$BASE/oauth/revoke" --data "token=$access" --data "client_id=$client_id" >/dev/null
status=$("${CURL[@]}" -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $access" "$BASE/api/memories")
[ "$status" = 401 ] || fail "revoked token gave $status"
step "revocation: revoked token refused"
echo "OAuth flow passed"
