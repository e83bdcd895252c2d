#!/usr/bin/env bash
# Installs the real mcp-memory-service from the package index into a venv of its own,
# for tests/upstream (the gateway in front of the service a user would run).
#
#   bash tests/upstream/install.sh [VERSION] [VENV]
#
# VERSION defaults to the pinned one (requirements-VERSION.txt beside this script lists
# it with every dependency); a VERSION without such a file is installed from its own
# metadata, still without torch. VENV defaults to
# ~/.cache/memory-gateway/mcp-memory-service-VERSION. Idempotent: an existing venv that
# imports the package is kept.
#
# Without torch, sentence-transformers and transformers (gigabytes, and a model download
# the test machines cannot do): mcp-memory-service falls back to hash embeddings.
# Its sqlite_vec storage loads an SQLite extension, so the venv needs a Python whose
# sqlite3 module allows extension loading (Debian's does; pyenv builds often do not).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
VERSION=${1:-10.59.0}
VENV=${2:-${HOME}/.cache/memory-gateway/mcp-memory-service-${VERSION}}
HEAVY='^(torch|sentence-transformers|transformers|tokenizers|huggingface-hub|onnxruntime)$'

can_load_extensions() {
    "$1" -c 'import sqlite3, sys; c = sqlite3.connect(":memory:"); c.enable_load_extension(True); sys.exit(sys.version_info < (3, 10))' \
        >/dev/null 2>&1
}

find_python() {
    local candidate
    for candidate in ${UPSTREAM_PYTHON:-} /usr/bin/python3 /usr/local/bin/python3 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 && can_load_extensions "$(command -v "$candidate")"; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import mcp_memory_service' 2>/dev/null; then
    echo "mcp-memory-service $("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("mcp-memory-service"))') in $VENV"
    exit 0
fi

if ! PYTHON=$(find_python); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 >/dev/null
    fi
    PYTHON=$(find_python) || {
        echo "no Python >= 3.10 whose sqlite3 allows extension loading (set UPSTREAM_PYTHON)" >&2
        exit 1
    }
fi

rm -rf "$VENV"
uv venv --quiet --python "$PYTHON" "$VENV"
if [ -f "$HERE/requirements-$VERSION.txt" ]; then
    # Every version pinned; --no-deps keeps torch out (the package itself requires it).
    uv pip install --quiet --python "$VENV/bin/python" --no-deps -r "$HERE/requirements-$VERSION.txt"
else
    uv pip install --quiet --python "$VENV/bin/python" --no-deps "mcp-memory-service==$VERSION"
    # Its declared dependencies minus the heavy ML ones, plus numpy (imported anyway).
    mapfile -t DEPS < <("$VENV/bin/python" - "$HEAVY" <<'EOF'
import re, sys
from importlib.metadata import requires
heavy = re.compile(sys.argv[1])
for req in requires("mcp-memory-service") or []:
    if "extra ==" in req:
        continue
    name = re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0]
    if not heavy.match(name.lower()):
        print(req.split(";")[0].strip())
print("numpy")
EOF
    )
    uv pip install --quiet --python "$VENV/bin/python" "${DEPS[@]}"
fi
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
check() {
    (cd "$SCRATCH" && HOME="$SCRATCH" MCP_MEMORY_STORAGE_BACKEND=sqlite_vec \
        MCP_MEMORY_SQLITE_PATH="$SCRATCH/check.db" "$VENV/bin/python" -c 'import mcp_memory_service.web.app')
}
check >/dev/null 2>&1 || {
    echo "mcp-memory-service $VERSION does not import without torch in $VENV" >&2
    check 2>&1 | tail -3 >&2
    exit 1
}
echo "mcp-memory-service $VERSION installed in $VENV (Python: $PYTHON)"
