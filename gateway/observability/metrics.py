"""The gateway's Prometheus metrics: one `Metrics` object per process, on its own
CollectorRegistry, served only on the metrics listener (MCP_GATEWAY_METRICS_ADDR).

Label values are always from small fixed sets (route classes, status codes, reasons,
grant types, known MCP methods, tool names the policy names), never from request input,
so a client cannot grow the series without bound. Hot-path counters are resolved to
their labelled child once per label combination (`_children`), which keeps an increment
to a dictionary lookup and a locked add.

Other parts get the object, or one of its named counters: `certificates` is there for
the ACME client (`metrics.certificate("renewed")`, `metrics.certificate("failed")`),
and `counter()` makes a further counter on the same registry.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

NAMESPACE = "mcp_gateway"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5)
# Status codes are labelled as they are, except that anything unusual becomes its class.
_STATUSES = frozenset(
    {200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 406,
     409, 410, 411, 413, 415, 422, 429, 431, 499, 500, 501, 502, 503, 504}
)  # fmt: skip
AUTH_REASONS = frozenset(
    {"missing", "invalid_token", "expired", "revoked", "bad_signature", "wrong_audience",
     "invalid_api_key", "invalid_request", "insufficient_scope", "unavailable"}
)  # fmt: skip


def status_label(status: int) -> str:
    return str(status) if status in _STATUSES else f"{status // 100}xx"


class Metrics:
    """Every metric the gateway exports, on `registry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "requests", "Requests answered, by route class and status",
            ["route", "status"], namespace=NAMESPACE, registry=r,
        )  # fmt: skip
        self.duration = Histogram(
            "request_duration_seconds", "Time from the request head to the end of the response",
            ["route"], namespace=NAMESPACE, registry=r, buckets=LATENCY_BUCKETS,
        )  # fmt: skip
        self.mcp = Counter(
            "mcp_requests", "JSON-RPC requests to /mcp, by method and tool",
            ["method", "tool"], namespace=NAMESPACE, registry=r,
        )  # fmt: skip
        self.auth_failures = Counter(
            "auth_failures", "Refused credentials on proxied routes, by reason",
            ["reason"], namespace=NAMESPACE, registry=r,
        )  # fmt: skip
        self.tokens = Counter(
            "tokens", "Tokens issued, refreshed and revoked, by grant",
            ["event", "grant"], namespace=NAMESPACE, registry=r,
        )  # fmt: skip
        self.upstream_latency = Histogram(
            "upstream_response_seconds", "Time from forwarding to the upstream's response head",
            namespace=NAMESPACE, registry=r, buckets=LATENCY_BUCKETS,
        )  # fmt: skip
        self.upstream_errors = Counter(
            "upstream_errors", "Upstream failures answered 502 or 504",
            ["status"], namespace=NAMESPACE, registry=r,
        )  # fmt: skip
        self.connections = Gauge(
            "open_connections", "Open client connections",
            namespace=NAMESPACE, registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.streams = Gauge(
            "open_streams", "Server-sent event streams being relayed",
            namespace=NAMESPACE, registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.rate_limited = Counter(
            "rate_limited", "Requests refused with 429, by route class",
            ["route"], namespace=NAMESPACE, registry=r,
        )  # fmt: skip
        self.cimd_fetches = Counter(
            "cimd_fetches", "Client ID Metadata Document resolutions, by outcome",
            ["outcome"], namespace=NAMESPACE, registry=r,
        )  # fmt: skip
        self.store_latency = Histogram(
            "store_operation_seconds", "OAuth state store calls, by operation",
            ["operation"], namespace=NAMESPACE, registry=r, buckets=STORE_BUCKETS,
        )  # fmt: skip
        self.store_errors = Counter(
            "store_errors", "OAuth state store calls that failed, by operation",
            ["operation"], namespace=NAMESPACE, registry=r,
        )  # fmt: skip
        self.certificates = Counter(
            "certificate_events", "Certificate events (ACME renewals and failures, reloads)",
            ["event"], namespace=NAMESPACE, registry=r,
        )  # fmt: skip
        self._children: dict[tuple[str, int], Counter] = {}
        self._durations: dict[str, Histogram] = {}

    def request(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.requests.labels(route, status_label(status))
        child.inc()
        duration = self._durations.get(route)
        if duration is None:
            duration = self._durations[route] = self.duration.labels(route)
        duration.observe(seconds)
        if status == 429:
            self.rate_limited.labels(route).inc()

    def auth_failure(self, reason: str) -> None:
        self.auth_failures.labels(reason if reason in AUTH_REASONS else "invalid_token").inc()

    def token(self, event: str, grant: str) -> None:
        """`event` is issued, refreshed or revoked; `grant` a grant type or token kind."""
        self.tokens.labels(event, grant).inc()

    def upstream(self, seconds: float, status: int) -> None:
        self.upstream_latency.observe(seconds)
        if status in (502, 504):
            self.upstream_errors.labels(str(status)).inc()

    def certificate(self, event: str) -> None:
        """For the certificate manager (ACME): `renewed`, `failed`, `reloaded` ..."""
        self.certificates.labels(event).inc()

    def counter(self, name: str, documentation: str, labels: Iterable[str] = ()) -> Counter:
        """A further counter on this registry (`mcp_gateway_<name>_total`)."""
        return Counter(
            name, documentation, list(labels), namespace=NAMESPACE, registry=self.registry
        )
