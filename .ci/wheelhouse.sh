#!/usr/bin/env bash
# Fill wheelhouse/ with the locked third-party wheels for the image's Python, so the image
# builds with no package index (the Dockerfile installs from it when it has wheels).
#
#   bash .ci/wheelhouse.sh [BASE_IMAGE]        # default: localbase/python:3.11-bookworm
#
# The lock's environment markers are evaluated for the base image's interpreter, not the
# host's: the two can differ in patch release (redis wants async-timeout below 3.11.3).
set -euo pipefail

cd "$(dirname "$0")/.."
BASE_IMAGE=${1:-${BASE_IMAGE:-localbase/python:3.11-bookworm}}
WHEELHOUSE=${WHEELHOUSE:-$PWD/wheelhouse}

MARKER_ENV='
import json, os, platform, sys
v = sys.implementation.version
impl_version = f"{v.major}.{v.minor}.{v.micro}"
print(json.dumps({
    "implementation_name": sys.implementation.name,
    "implementation_version": impl_version,
    "os_name": os.name,
    "platform_machine": platform.machine(),
    "platform_release": platform.release(),
    "platform_system": platform.system(),
    "platform_version": platform.version(),
    "python_full_version": platform.python_version(),
    "platform_python_implementation": platform.python_implementation(),
    "python_version": ".".join(platform.python_version_tuple()[:2]),
    "sys_platform": sys.platform,
}))'

# Each locked requirement whose marker holds in the image, as `name==version --hash=...`
# (the marker dropped: pip would evaluate it for the host's interpreter).
SELECT='
import json, sys
from packaging.requirements import Requirement
env = json.loads(sys.argv[1])
for line in open(sys.argv[2]).read().replace("\\\n", " ").splitlines():
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    spec, *hashes = line.split(" --hash=")
    req = Requirement(spec)
    if req.marker is None or req.marker.evaluate(env):
        print(f"{req.name}{req.specifier}", *(f"--hash={h.strip()}" for h in hashes))'

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
docker run --rm "$BASE_IMAGE" python3 -c "$MARKER_ENV" >"$work/env.json"
uv export --frozen --no-dev --no-emit-project --no-header --no-annotate --quiet -o "$work/locked.txt"
uv run --no-sync python -c "$SELECT" "$(cat "$work/env.json")" "$work/locked.txt" >"$work/requirements.txt"
echo "hatchling" >"$work/build.txt" # the build backend, for building the project in the image

stamp=$(cat "$work/env.json" "$work/requirements.txt" "$work/build.txt" | sha256sum | cut -d' ' -f1)
if [ -f "$WHEELHOUSE/.stamp" ] && [ "$(cat "$WHEELHOUSE/.stamp")" = "$stamp" ]; then
    echo "wheelhouse up to date ($(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels)"
    exit 0
fi
mkdir -p "$WHEELHOUSE"
find "$WHEELHOUSE" -name '*.whl' -delete
pip_wheel() { uv run --no-sync --with pip python -m pip wheel --quiet --disable-pip-version-check -w "$WHEELHOUSE" "$@"; }
pip_wheel --no-deps -r "$work/requirements.txt"
pip_wheel -r "$work/build.txt"
cp "$work/requirements.txt" "$WHEELHOUSE/requirements.txt"
echo "$stamp" >"$WHEELHOUSE/.stamp"
echo "wheelhouse built for $(python3 -c 'import json,sys; e=json.load(open(sys.argv[1])); print(e["python_full_version"])' "$work/env.json"): $(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels"
