#!/usr/bin/env bash
# Bring up a Docker engine, the compose v2 plugin and a registry-free base image on a
# Debian bookworm machine (see docs: OFFLINE-DOCKER.md). Every step is skipped when its
# result is already there, so running it again is cheap.
#
#   bash .ci/docker-setup.sh            # engine + compose + base image
#   BASE_IMAGE_TAG=... bash .ci/docker-setup.sh
set -euo pipefail

BASE_IMAGE_TAG=${BASE_IMAGE_TAG:-localbase/python:3.11-bookworm}
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/dockerd.log}
DOCKERD_TIMEOUT=${DOCKERD_TIMEOUT:-60}

log() { printf '[docker-setup] %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

debian_mirror() {
    local mirror=""
    if [ -r /etc/apt/sources.list.d/debian.sources ]; then
        mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    fi
    if [ -z "$mirror" ] && [ -r /etc/apt/sources.list ]; then
        mirror=$(awk '$1=="deb"{for(i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' \
            /etc/apt/sources.list)
    fi
    [ -n "$mirror" ] || { log "cannot find the Debian mirror in apt's sources"; return 1; }
    printf '%s\n' "$mirror"
}

APT_UPDATED=0
apt_install() {
    if [ "$APT_UPDATED" -eq 0 ]; then
        as_root apt-get update -qq
        APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_engine() {
    if docker info >/dev/null 2>&1; then
        log "engine: already running"
        return
    fi
    if ! command -v dockerd >/dev/null 2>&1; then
        log "engine: installing docker.io"
        apt_install docker.io
    fi
    log "engine: starting dockerd (log: $DOCKERD_LOG)"
    as_root sh -c "nohup dockerd >>'$DOCKERD_LOG' 2>&1 &"
    local deadline=$((SECONDS + DOCKERD_TIMEOUT))
    until docker info >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "engine: not up after ${DOCKERD_TIMEOUT}s; last lines of $DOCKERD_LOG:"
            tail -n 30 "$DOCKERD_LOG" >&2 || true
            return 1
        fi
        sleep 1
    done
    log "engine: $(docker version --format '{{.Server.Version}}')"
}

compose_plugin_dir() {
    if [ "$(id -u)" -eq 0 ]; then
        echo /usr/local/lib/docker/cli-plugins
    else
        echo "$HOME/.docker/cli-plugins"
    fi
}

# Bookworm ships compose v1 only; take the v2 plugin binary out of the next release's
# package without installing that package (it would replace bookworm's v1 package).
ensure_compose() {
    if docker compose version >/dev/null 2>&1; then
        log "compose: $(docker compose version --short)"
        return
    fi
    log "compose: extracting the v2 plugin from the trixie package"
    local mirror work opts
    mirror=$(debian_mirror)
    work=$(mktemp -d)
    chmod 0755 "$work" # apt's download user must be able to write here
    mkdir -p "$work/lists/partial" "$work/cache"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" \
        >"$work/sources.list"
    opts="-o Dir::Etc::sourcelist=$work/sources.list -o Dir::Etc::sourceparts=-"
    opts="$opts -o Dir::State::Lists=$work/lists -o Dir::Cache=$work/cache"
    # shellcheck disable=SC2086
    apt-get $opts update -qq
    # shellcheck disable=SC2086
    (cd "$work" && apt-get $opts download docker-compose >/dev/null)
    dpkg-deb -x "$work"/docker-compose_*.deb "$work/x"
    install -D -m 0755 "$work/x/usr/libexec/docker/cli-plugins/docker-compose" \
        "$(compose_plugin_dir)/docker-compose"
    rm -rf "$work"
    log "compose: $(docker compose version --short)"
}

ensure_base_image() {
    if docker image inspect "$BASE_IMAGE_TAG" >/dev/null 2>&1; then
        log "base image: $BASE_IMAGE_TAG present"
        return
    fi
    command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
    log "base image: debootstrap bookworm into $BASE_IMAGE_TAG"
    local mirror work
    mirror=$(debian_mirror)
    work=$(mktemp -d)
    as_root debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
        tail -n 30 "$work/debootstrap.log" >&2
        return 1
    }
    as_root rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/*
    as_root tar --numeric-owner -C "$work/rootfs" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' - "$BASE_IMAGE_TAG" >/dev/null
    as_root rm -rf "$work"
    log "base image: built $BASE_IMAGE_TAG"
}

main() {
    if ! command -v docker >/dev/null 2>&1 && ! command -v dockerd >/dev/null 2>&1; then
        apt_install docker.io
    fi
    ensure_engine
    ensure_compose
    ensure_base_image
}

main "$@"
