from datetime import UTC, datetime, timedelta

from gateway.acme.schedule import StoredCertificate, backoff, plan, renewal_time

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DIRECTORY = "https://acme.test/dir"


def _cert(**overrides: object) -> StoredCertificate:
    values: dict[str, object] = {
        "domains": ("a.test", "b.test"),
        "not_before": T0,
        "not_after": T0 + timedelta(days=90),
        "serial": 1,
        "directory": DIRECTORY,
        "placeholder": False,
    }
    values.update(overrides)
    return StoredCertificate(**values)  # type: ignore[arg-type]


def test_renewal_when_a_third_of_the_lifetime_is_left() -> None:
    assert renewal_time(T0, T0 + timedelta(days=90)) == T0 + timedelta(days=60)
    assert renewal_time(T0, T0 + timedelta(seconds=15)) == T0 + timedelta(seconds=10)


def test_plan_reasons() -> None:
    now = T0 + timedelta(days=1)
    assert plan(None, ("a.test",), DIRECTORY, now).due == now
    assert "placeholder" in plan(_cert(placeholder=True), ("a.test",), DIRECTORY, now).reason
    changed = plan(_cert(), ("a.test",), DIRECTORY, now)
    assert changed.due == now
    assert "domains changed" in changed.reason
    # Order of names does not matter.
    same = plan(_cert(), ("b.test", "a.test"), DIRECTORY, now)
    assert same.due == T0 + timedelta(days=60)
    assert same.reason == "a third of its lifetime left"
    moved = plan(_cert(), ("a.test", "b.test"), "https://other.test/dir", now)
    assert moved.due == now
    assert "directory changed" in moved.reason
    late = T0 + timedelta(days=91)
    assert plan(_cert(), ("a.test", "b.test"), DIRECTORY, late).reason == "the certificate expired"


def test_plan_follows_ari_when_offered() -> None:
    now = T0 + timedelta(days=1)
    window = T0 + timedelta(days=70)
    decided = plan(_cert(), ("a.test", "b.test"), DIRECTORY, now, ari_time=window)
    assert decided.due == window
    assert "ARI" in decided.reason
    # An ARI time past expiry is capped at expiry.
    capped = plan(_cert(), ("a.test", "b.test"), DIRECTORY, now, T0 + timedelta(days=100))
    assert capped.due == T0 + timedelta(days=90)


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff(n, 60) for n in range(5)] == [0, 60, 120, 240, 480]
    assert backoff(10, 60) == 3600
    assert backoff(10_000, 60) == 3600
