"""The token bucket credits idle time, so every snapshot's burst goes out at once."""

from __future__ import annotations

import asyncio

import pytest

from app.market.throttle import TokenBucket


class FakeClock:
    """A monotonic clock that moves only when the bucket sleeps (or the test moves it)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_a_full_bucket_lets_a_burst_through_without_waiting(clock: FakeClock) -> None:
    bucket = TokenBucket(capacity=5, refill_per_s=20, clock=clock, sleep=clock.sleep)

    async def burst() -> None:
        await asyncio.gather(*(bucket.acquire(1) for _ in range(5)))

    asyncio.run(burst())
    assert clock.slept == []
    assert bucket.tokens == 0


def test_an_empty_bucket_waits_for_the_refill_of_the_cost(clock: FakeClock) -> None:
    """Capacity 2, 20 tokens/s: after spending 2, a request costing 2 waits 2/20 = 0.1 s."""
    bucket = TokenBucket(capacity=2, refill_per_s=20, clock=clock, sleep=clock.sleep)

    async def scenario() -> None:
        await bucket.acquire(2)
        await bucket.acquire(2)

    asyncio.run(scenario())
    assert clock.slept == [pytest.approx(0.1)]


def test_idle_time_is_credited_up_to_the_capacity(clock: FakeClock) -> None:
    """ccxt's own bucket forgets idle time; this one refills while nobody asks."""
    bucket = TokenBucket(capacity=10, refill_per_s=20, clock=clock, sleep=clock.sleep)

    async def scenario() -> None:
        for _ in range(10):
            await bucket.acquire(1)
        clock.now += 60.0
        for _ in range(10):
            await bucket.acquire(1)

    asyncio.run(scenario())
    assert clock.slept == []
