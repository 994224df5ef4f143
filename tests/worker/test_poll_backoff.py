"""An idle worker's poll wait: 100 ms doubling to 1 s, for as long as it stays idle."""

from __future__ import annotations

from openworkflow.worker.idle import poll_backoff_ms


def test_the_wait_doubles_up_to_a_second() -> None:
    for empty_polls, most in ((1, 100), (2, 200), (3, 400), (4, 800), (5, 1000), (60, 1000)):
        wait = poll_backoff_ms(empty_polls)
        assert most / 2 <= wait <= most, (empty_polls, wait)


def test_a_worker_idle_for_days_still_gets_a_wait() -> None:
    # 2 ** 1024 is past a float: an uncapped exponent killed the claim loop of a
    # worker left idle for about 17 minutes (1,025 empty polls of 1 s).
    for empty_polls in (1_025, 100_000, 10**9):
        assert 500 <= poll_backoff_ms(empty_polls) <= 1000


def test_the_safety_poll_is_jittered_by_at_most_a_second() -> None:
    for _ in range(50):
        wait = poll_backoff_ms(60, cap_ms=10_000)
        assert 9_000 <= wait <= 10_000, wait
