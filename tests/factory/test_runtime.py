"""The one reconnect loop every long-lived client uses: capped, jittered backoff that starts
afresh after a healthy session, and errors it does not know about end it; the bound on a
stop's last steps."""

from __future__ import annotations

import asyncio
import logging

import pytest

from factory.runtime import Backoff, keep_running, within


def test_backoff_doubles_to_its_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(first_s=0.5, cap_s=4.0, jitter=0.2)
    delays = [backoff.next() for _ in range(8)]
    for delay, nominal in zip(delays, (0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0), strict=True):
        assert nominal * 0.8 <= delay <= nominal * 1.2
    assert len({round(d, 6) for d in delays[3:]}) > 1  # jittered, not in step
    backoff.reset()
    assert 0.4 <= backoff.next() <= 0.6


async def test_keep_running_retries_known_errors_and_restarts_the_backoff_after_a_healthy_session(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []
    errors: list[BaseException] = []
    delays: list[float] = []

    class Recorded(Backoff):
        def next(self) -> float:
            delays.append(super().next())
            return delays[-1]

    backoff = Recorded(first_s=0.01, cap_s=0.04, jitter=0.0)

    async def session() -> None:
        calls.append("session")
        if len(calls) == 6:
            raise ValueError("not ours to retry")
        raise ConnectionError(f"lost {len(calls)}")

    def healthy() -> bool:
        return len(calls) == 3  # the third session got far enough

    with caplog.at_level(logging.WARNING), pytest.raises(ValueError, match="not ours"):
        await asyncio.wait_for(
            keep_running(
                session,
                retry_on=(ConnectionError,),
                what="link",
                backoff=backoff,
                healthy=healthy,
                on_error=errors.append,
            ),
            5,
        )
    assert len(calls) == 6
    assert [str(e) for e in errors] == ["lost 1", "lost 2", "lost 3", "lost 4", "lost 5"]
    assert delays == pytest.approx([0.01, 0.02, 0.01, 0.02, 0.04])  # reset after the third, capped at 40 ms
    assert caplog.records[0].getMessage() == "link: lost 1; retrying in 0.0 s"


async def test_a_bounded_last_step_of_a_cancelled_task_times_out_and_what_follows_still_runs() -> None:
    # As an edge agent stopping: waiting for confirmations that do not come, then saying offline.
    # (asyncio.timeout raised CancelledError here on Python 3.11.2, skipping the goodbye.)
    said: list[str] = []

    async def service() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            try:
                await within(0.1, asyncio.sleep(3600))
            except TimeoutError:
                said.append("gave up waiting")
            said.append(await within(1, asyncio.sleep(0, "offline")))
            raise

    task = asyncio.create_task(service())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert said == ["gave up waiting", "offline"]
