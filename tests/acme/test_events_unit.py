from prometheus_client import CollectorRegistry, Counter

from gateway.acme import AcmeCounters


def test_counters_forward_each_event_to_a_labelled_counter() -> None:
    registry = CollectorRegistry()
    counter = Counter("certificate_events", "ACME events", ["event"], registry=registry)
    events = AcmeCounters(forward=lambda event: counter.labels(event).inc())
    events.failed(("memory.test",), "validation failed: memory.test: dns")
    events.issued(("memory.test",), renewal=False, seconds=1.5)
    events.issued(("memory.test",), renewal=True, seconds=1.2)
    events.serving(1234, 1_900_000_000.0)

    def value(event: str) -> float | None:
        return registry.get_sample_value("certificate_events_total", {"event": event})

    assert value("failed") == 1
    assert value("issued") == 1
    assert value("renewed") == 1
    assert (events.issued_total, events.renewed_total, events.failures_total) == (2, 1, 1)
    assert events.consecutive_failures == 0
    assert events.last_error == "validation failed: memory.test: dns"
    assert (events.serving_serial, events.serving_not_after) == (1234, 1_900_000_000.0)
