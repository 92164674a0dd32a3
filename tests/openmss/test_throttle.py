"""Failed-login throttling, pure, with a fake clock."""

from openmss.throttle import LoginThrottle, throttle_keys


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_account_blocked_after_limit_then_released_by_the_window():
    clock = Clock()
    t = LoginThrottle(max_failures=3, max_failures_per_address=10, window=60, clock=clock)
    keys = throttle_keys("Alice@A.test", "10.0.0.1")
    for _ in range(3):
        assert t.retry_after(keys) == 0
        t.failure(keys)
        clock.now += 1
    assert 55 < t.retry_after(keys) <= 60
    clock.now += 60
    assert t.retry_after(keys) == 0


def test_address_limit_is_higher_than_the_account_limit():
    clock = Clock()
    t = LoginThrottle(max_failures=3, max_failures_per_address=5, window=60, clock=clock)
    # Five different users behind one NAT address mistype once each: nobody is blocked yet...
    for i in range(4):
        t.failure(throttle_keys(f"user{i}@a.test", "192.0.2.1"))
    assert t.retry_after(throttle_keys("other@a.test", "192.0.2.1")) == 0
    # ...the fifth failure from that address blocks it for everybody.
    t.failure(throttle_keys("user9@a.test", "192.0.2.1"))
    assert t.retry_after(throttle_keys("other@a.test", "192.0.2.1")) > 0
    assert t.retry_after(throttle_keys("other@a.test", "192.0.2.2")) == 0


def test_success_clears_the_account_but_not_the_address():
    t = LoginThrottle(max_failures=2, max_failures_per_address=3, window=60, clock=Clock())
    keys = throttle_keys("a@a.test", "192.0.2.1")
    t.failure(keys)
    t.success(keys)
    t.failure(keys)
    assert t.retry_after(keys) == 0
    t.failure(keys)
    assert t.retry_after(keys) > 0


def test_memory_is_bounded():
    t = LoginThrottle(max_keys=100, clock=Clock())
    for i in range(1000):
        t.failure([f"ip:{i}"])
    assert len(t._failures) <= 100
