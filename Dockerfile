# One image, two programs: `memory-gateway serve` (the default) and `memory-backend`.
#
# Online (the usual case):   docker build -t memory-gateway .
#   installs exactly what uv.lock pins (hashes checked), with uv (UV_VERSION) used only in
#   the build stage.
# Offline (what CI does):    put the third-party wheels in wheelhouse/ (see .ci/run), then
#   docker build --build-arg BASE_IMAGE=localbase/python:3.11-bookworm -t memory-gateway .
#   .ci/wheelhouse.sh fills it with the versions uv.lock pins, and nothing else.
# The project itself is always built from this source tree, never from a wheel on disk.
# Kept to what the legacy builder understands: no syntax line, no RUN --mount, no heredocs.
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
ARG UV_VERSION=0.13.9
# Lets `docker image prune --filter label=memory-gateway.stage=build` find old build stages.
LABEL memory-gateway.stage=build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/venv
COPY . /src
RUN set -eu; \
    if ls /src/wheelhouse/*.whl >/dev/null 2>&1; then \
        /opt/venv/bin/pip install --no-index --find-links /src/wheelhouse /src; \
    else \
        python3 -m pip install --no-cache-dir "uv==${UV_VERSION}"; \
        cd /src && UV_PROJECT_ENVIRONMENT=/opt/venv uv sync --frozen --no-dev --no-editable \
            --no-cache --compile-bytecode; \
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
