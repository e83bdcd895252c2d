# One image, two programs: `memory-gateway serve` (the default) and `memory-backend`.
#
# Online (the usual case):   docker build -t memory-gateway .
#   installs exactly what uv.lock pins, every file checked against the lock's sha256: uv
#   (UV_VERSION, in a venv of the build stage only) exports the lock with its hashes and
#   installs that list with --require-hashes --no-deps. The files come from the package
#   index, or from INDEX_URL if given (a PEP 503 "simple" mirror; the lock's own file URLs
#   are not used, so a mirror serving the same files works, and any other file fails):
#     docker build --build-arg INDEX_URL=https://mirror.example/simple -t memory-gateway .
#   The build backend (hatchling, for the project itself) is not in the lock: it comes from
#   the same index at its newest version.
# Offline (what CI does):    put the third-party wheels in wheelhouse/ (see .ci/run), then
#   docker build --build-arg BASE_IMAGE=localbase/python:3.11-bookworm -t memory-gateway .
#   .ci/wheelhouse.sh fills it with the files uv.lock pins, and nothing else, and writes
#   wheelhouse/requirements.txt (the lock's list with its hashes for the image's Python),
#   installed the same way: --require-hashes --no-deps.
# The project itself is always built from this source tree, never from a wheel on disk.
# Kept to what the legacy builder understands: no syntax line, no RUN --mount, no heredocs.
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
ARG UV_VERSION=0.13.9
ARG INDEX_URL=""
# Lets `docker image prune --filter label=memory-gateway.stage=build` find old build stages.
LABEL memory-gateway.stage=build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/venv
COPY . /src
RUN set -eu; \
    if ls /src/wheelhouse/*.whl >/dev/null 2>&1; then \
        pip_offline="/opt/venv/bin/pip install --no-index --find-links /src/wheelhouse"; \
        $pip_offline --require-hashes --no-deps -r /src/wheelhouse/requirements.txt; \
        $pip_offline --no-deps /src; \
        /opt/venv/bin/pip check; \
    else \
        python3 -m venv /opt/uv; \
        /opt/uv/bin/pip install --quiet ${INDEX_URL:+--index-url "$INDEX_URL"} "uv==${UV_VERSION}"; \
        export UV_NO_CACHE=1 UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1; \
        cd /src; \
        /opt/uv/bin/uv export --frozen --no-dev --no-emit-project --quiet -o /tmp/locked.txt; \
        /opt/uv/bin/uv pip install --python /opt/venv/bin/python ${INDEX_URL:+--default-index "$INDEX_URL"} \
            --require-hashes --no-deps -r /tmp/locked.txt; \
        /opt/uv/bin/uv pip install --python /opt/venv/bin/python ${INDEX_URL:+--default-index "$INDEX_URL"} \
            --no-deps /src; \
        /opt/uv/bin/uv pip check --python /opt/venv/bin/python; \
        rm -rf /opt/uv /tmp/locked.txt; \
    fi; \
    /opt/venv/bin/python -m pip uninstall --yes pip setuptools; \
    /opt/venv/bin/memory-gateway --help >/dev/null; \
    /opt/venv/bin/memory-backend --help >/dev/null

FROM ${BASE_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="memory-gateway" \
      org.opencontainers.image.description="OAuth 2.1 TLS edge gateway and the MCP memory backend it protects" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MCP_HTTP_HOST=0.0.0.0 \
    MCP_HTTP_PORT=8443 \
    MCP_HTTPS_ENABLED=true \
    MCP_GATEWAY_STATE_DIR=/state \
    MCP_SSL_CERT_FILE=/state/certs/server.pem \
    MCP_SSL_KEY_FILE=/state/certs/server.key \
    MCP_GATEWAY_LOG_FORMAT=json
RUN groupadd --system --gid 10001 app \
    && useradd --system --no-log-init --uid 10001 --gid app --home-dir /state \
        --shell /usr/sbin/nologin app \
    && mkdir -p /state /data \
    && chown app:app /state /data
COPY --from=build /opt/venv /opt/venv
COPY scripts/docker-entrypoint.sh /usr/local/bin/docker-entrypoint
COPY scripts/docker-healthcheck.py /usr/local/bin/docker-healthcheck
USER app
WORKDIR /state
EXPOSE 8443 8001
# Healthy = ready (/readyz: store answers, backend accepts connections); see the script.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "/usr/local/bin/docker-healthcheck"]
ENTRYPOINT ["/bin/sh", "/usr/local/bin/docker-entrypoint"]
CMD ["memory-gateway", "serve"]
