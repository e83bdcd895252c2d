#!/bin/sh
# Container entry point. For `memory-gateway serve` with HTTPS on and no certificate
# mounted, make (or renew) development certificates in the state volume first; a mounted
# certificate is never touched. Then run the command as PID 1.
set -eu

is_true() {
    case "$1" in 1 | [Tt][Rr][Uu][Ee] | [Yy][Ee][Ss] | [Oo][Nn]) return 0 ;; *) return 1 ;; esac
}

dev_certs_wanted() {
    [ "${1:-}" = memory-gateway ] && [ "${2:-}" = serve ] || return 1
    is_true "${MCP_HTTPS_ENABLED:-false}" || return 1
    cert=${MCP_SSL_CERT_FILE:-}
    key=${MCP_SSL_KEY_FILE:-}
    dir=$(dirname "$cert")
    # Only the layout `memory-gateway certs` writes, and only ours or none at all.
    [ "$(basename "$cert")" = server.pem ] && [ "$key" = "$dir/server.key" ] || return 1
    [ ! -e "$cert" ] || [ -e "$dir/dev-ca.pem" ]
}

if dev_certs_wanted "$@"; then
    dir=$(dirname "$MCP_SSL_CERT_FILE")
    sans=""
    for name in $(printf '%s' "${MCP_GATEWAY_CERT_SANS:-}" | tr ',' ' '); do
        sans="$sans --san $name"
    done
    # shellcheck disable=SC2086
    memory-gateway certs --dir "$dir" $sans >&2
fi

exec "$@"
