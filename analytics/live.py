"""The live anomaly job: per asset, train on a healthy window, then score new telemetry.

Each run (the scheduler calls it every few seconds) goes asset by asset, one
transaction each:

1. An asset without a model waits until its tags have reported for a whole
   ``healthy_window_s``, then trains the detector (``analytics.detector``, the code
   SKAB evaluates) on that window, and the per-tag checks learn their limits.
2. An asset with a model scores the grid times since it last scored, up to now minus
   ``settle_s`` (late points get that long to arrive): one ``multivariate`` row per grid
   time in ``analytics.anomaly`` with the per-tag contributions in ``details``, plus a
   row per point a per-tag check flags.
3. Episodes, not points, make events: when one opens or closes, a row in
   ``analytics.anomaly_episode`` changes and an ``anomaly`` event goes to
   ``analytics.outbox`` in the same transaction (relayed to MQTT after commit).

The filters' and episodes' state lives in ``analytics.detector_state``, saved with the
rows, so a crash repeats a run instead of losing or doubling it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from pydantic import BaseModel, ConfigDict, Field

from analytics import store
from analytics.checks import CheckConfig, Flag, StuckState, TagLimits, run_checks
from analytics.detector import Detector, DetectorConfig, Model, Scores, StreamState
from analytics.errors import TooLittleDataError
from analytics.grid import grid_times, model_tags, modelable, out_of_mode, resample

__all__ = ["AnomalyJob", "LiveConfig", "RunSummary"]

log = logging.getLogger(__name__)
MULTIVARIATE = "multivariate"


class LiveConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    site: str | None = Field(None, description="only this site (default: every site)")
    assets: list[str] | None = Field(None, description="only these assets (default: every asset)")
    exclude: list[str] = Field(["*.state", "*setpoint*"], description="tag name patterns never modelled")
    mode_tag: str | list[str] = Field(
        "{asset}.state", description="the asset's operating-mode tag ('' for none); of a list, the first it has"
    )
    running: list[float] = Field([1.0], description="mode tag values in which the asset is modelled and scored")
    step_s: float = Field(1.0, gt=0, description="grid step the detector scores on")
    healthy_window_s: float = Field(1800.0, gt=0, description="training window: two of the slowest normal cycles")
    settle_s: float = Field(2.0, ge=0, description="how long late points get before a time is scored")
    stale_s: float = Field(30.0, gt=0, description="how long a tag's last value stands in for it")
    max_batch_s: float = Field(3600.0, gt=0, description="most backlog scored in one run")
    episode_quiet_s: float = Field(
        30.0, gt=0, description="a per-tag check's episode ends this long after its last flag"
    )
    retrain_every_s: float | None = Field(None, gt=0, description="retrain a model this old when no episode is open")
    detector: DetectorConfig = DetectorConfig()
    checks: CheckConfig = CheckConfig()


@dataclass(slots=True)
class RunSummary:
    assets: int = 0
    trained: int = 0
    points: int = 0
    flags: int = 0
    opened: int = 0
    closed: int = 0
    failed: list[str] = field(default_factory=list)  # "site/asset: error" for assets skipped this run


@dataclass(slots=True)
class _Pass:
    """One asset in one run: where to write, and what to count."""

    conn: store.Conn
    asset: store.AssetTags
    summary: RunSummary

    async def open(self, tag: tuple[int, str] | None, detector: str, at: float, score: float, **data: Any) -> int:
        tag_id, name = tag if tag is not None else (None, None)
        ep = await store.open_episode(self.conn, self.asset.site, self.asset.asset, tag_id, detector, at, score, data)
        await store.emit(self.conn, "anomaly", self._event("start", detector, name, ep, at=at, score=score, **data))
        self.summary.opened += 1
        return ep

    async def close(self, tag: str | None, detector: str, episode: dict[str, Any], ended: float) -> None:
        await store.close_episode(self.conn, int(episode["id"]), ended, float(episode["peak"]))
        await store.emit(self.conn, "anomaly", self._event(
            "end", detector, tag, int(episode["id"]), started=episode.get("started"), at=ended, score=episode["peak"],
        ))  # fmt: skip
        self.summary.closed += 1

    def _event(self, state: str, detector: str, tag: str | None, episode: int, **data: Any) -> dict[str, Any]:
        times = {k: store.to_datetime(v).isoformat() for k, v in data.items() if k in ("at", "started") and v}
        return {"state": state, "site": self.asset.site, "asset": self.asset.asset, "detector": detector,
                "tag": tag, "episode": episode, **data, **times}  # fmt: skip


class AnomalyJob:
    """One pass over every asset per ``run``; ``clock`` gives epoch seconds (tests fix it)."""

    def __init__(self, config: LiveConfig | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config or LiveConfig()
        self.clock = clock

    async def run(self, conn: store.Conn) -> RunSummary:
        cfg, summary = self.config, RunSummary()
        now = self.clock()
        end = float(np.floor((now - cfg.settle_s) / cfg.step_s) * cfg.step_s)
        for asset in await store.list_assets(conn, cfg.site, cfg.assets):
            summary.assets += 1
            try:
                await self._asset(conn, asset, end, now, summary)
            except psycopg.OperationalError:
                raise  # the connection is gone: the scheduler retries the whole run
            except Exception as exc:  # one asset's bad data must not starve the others
                log.exception("%s/%s: scoring failed", asset.site, asset.asset)
                summary.failed.append(f"{asset.site}/{asset.asset}: {type(exc).__name__}: {exc}")
        return summary

    async def _asset(self, conn: store.Conn, asset: store.AssetTags, end: float, now: float,
                     summary: RunSummary) -> None:  # fmt: skip
        async with conn.transaction():  # rows, episodes, events and state commit together
            state = await store.load_state(conn, asset.site, asset.asset)
            if state is not None and self._stale_model(state, now):
                state = None
            if state is None:
                summary.trained += await self._train(conn, asset, end, now)
            else:
                await self._score(_Pass(conn, asset, summary), state, end)

    def _mode_tag(self, asset: store.AssetTags) -> int | None:
        templates = [self.config.mode_tag] if isinstance(self.config.mode_tag, str) else self.config.mode_tag
        by_name = {t.name: t.id for t in asset.tags}
        names = (template.format(asset=asset.asset) for template in templates if template)
        return next((by_name[name] for name in names if name in by_name), None)

    async def _mode(self, conn: store.Conn, mode_id: int | None, after: float, until: float) -> store.Series | None:
        """The mode tag's samples in (after, until], with the last one before them."""
        if mode_id is None:
            return None
        times, values = await store.last_sample(conn, mode_id, after)
        during = (await store.fetch_samples(conn, [mode_id], after, until)).get(mode_id)
        if during is not None:
            times, values = np.concatenate([times, during[0]]), np.concatenate([values, during[1]])
        return times, values

    def _out_of_mode(self, mode: store.Series | None, at: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        """True where the asset is stopped or faulted at these times (its mode tag's last value)."""
        if mode is None or not at.size:
            return np.zeros(at.size, dtype=bool)
        return out_of_mode(resample({0: mode}, [0], at, float("inf"))[:, 0], self.config.running)

    def _idle_until(self, mode: store.Series | None, now: float) -> float:
        """When the asset last was stopped or faulted, up to ``now`` (``now`` while it still is;
        minus infinity if it ran throughout): a stopped machine's sensor is not stuck."""
        if mode is None or not mode[0].size:
            return float("-inf")
        times, values = mode
        times, values = times[times <= now], values[times <= now]
        stopped = out_of_mode(values, self.config.running)
        if not stopped.any():
            return float("-inf")
        last = int(np.flatnonzero(stopped)[-1])
        return now if last == times.size - 1 else float(times[last + 1])

    def _stale_model(self, state: store.AssetState, now: float) -> bool:
        every = self.config.retrain_every_s
        return every is not None and now - state.trained_at > every and not state.stream.get("episode")

    async def _train(self, conn: store.Conn, asset: store.AssetTags, end: float, now: float) -> int:
        cfg = self.config
        names = {t.id: t.name for t in asset.tags}
        ids = model_tags(names, {t.id: t.data_type for t in asset.tags}, cfg.exclude)
        start = end - cfg.healthy_window_s
        samples = await store.fetch_samples(conn, ids, start - cfg.stale_s, end)
        ids = [i for i in ids if i in samples and modelable(samples[i][1][samples[i][0] > start])]
        if not ids or min(float(samples[i][0][0]) for i in ids) > start:
            return 0  # not reporting for a whole healthy window yet
        grid = grid_times(start, end, cfg.step_s)
        mode_id = self._mode_tag(asset)
        mode = await self._mode(conn, mode_id, start - cfg.stale_s, end)
        rows = resample(samples, ids, grid, cfg.stale_s)
        rows[self._out_of_mode(mode, grid)] = np.nan
        try:
            detector = Detector(cfg.detector, [names[i] for i in ids]).fit(rows)
        except TooLittleDataError as exc:
            log.info("%s/%s: not trained yet: %s", asset.site, asset.asset, exc)
            return 0
        assert detector.model is not None
        by_name = {names[i]: i for i in ids}
        tag_ids = [by_name[name] for name in detector.model.tags]
        checks: dict[str, Any] = {}
        for tag_id in tag_ids:
            times, values = samples[tag_id]
            inside = (times > start) & ~self._out_of_mode(mode, times)
            limits = TagLimits.learn(names[tag_id], times[inside], values[inside], cfg.checks)
            if limits is not None:
                checks[str(tag_id)] = {"limits": limits.to_dict(), "stuck": {}, "open": {}}
        stream = StreamState(detector.model.last.copy()).to_dict() | {"episode": None}
        await store.save_state(conn, store.AssetState(
            asset.site, asset.asset, tag_ids, detector.model.to_json(), stream, {"tags": checks, "mode_tag": mode_id},
            healthy_from=start, healthy_to=end, trained_at=now, scored_until=end,
        ))  # fmt: skip
        log.info("%s/%s: trained on %s", asset.site, asset.asset, ", ".join(detector.model.tags))
        return 1

    async def _score(self, run: _Pass, state: store.AssetState, end: float) -> None:
        cfg = self.config
        since = state.scored_until
        until = min(end, since + cfg.max_batch_s)
        if until <= since:
            return
        samples = await store.fetch_samples(run.conn, state.tag_ids, since - cfg.stale_s, until)
        mode = await self._mode(run.conn, state.checks.get("mode_tag"), since - cfg.stale_s, until)
        await self._multivariate(run, state, samples, mode, until)
        await self._checks(run, state, samples, mode, until)
        state.scored_until = until
        await store.save_state(run.conn, state)

    async def _multivariate(self, run: _Pass, state: store.AssetState, samples: dict[int, store.Series],
                            mode: store.Series | None, until: float) -> None:  # fmt: skip
        cfg, asset = self.config, run.asset
        model = Model.from_json(state.model)
        grid = grid_times(state.scored_until, until, cfg.step_s)
        rows = resample(samples, state.tag_ids, grid, cfg.stale_s)
        rows[self._out_of_mode(mode, grid)] = np.nan
        stream = Detector(cfg.detector, model.tags, model).stream(StreamState.from_dict(state.stream))
        scores = stream.update(rows)
        seen = ~np.all(np.isnan(rows), axis=1)  # no row while stopped, or while every tag is silent
        split = np.round(scores.contributions, 4).tolist()
        await store.write_anomalies(run.conn, [
            store.AnomalyRow(float(grid[i]), asset.site, asset.asset, None, MULTIVARIATE, float(scores.score[i]),
                             is_anomaly=bool(scores.is_anomaly[i]),
                             details={"contributions": dict(zip(model.tags, split[i], strict=True))})
            for i in np.flatnonzero(seen)
        ])  # fmt: skip
        if scores.earlier:  # an episode opening here began in rows an earlier run wrote
            first = float(grid[0])
            await store.flag_earlier(run.conn, asset.site, asset.asset, MULTIVARIATE,
                                     start=first - (scores.earlier + 0.5) * cfg.step_s, end=first)  # fmt: skip
        run.summary.points += int(np.count_nonzero(seen))
        episode = await self._episodes(run, model.tags, grid, scores, state.stream.get("episode"), step_s=cfg.step_s)
        state.stream = stream.state.to_dict() | {"episode": episode}

    @staticmethod
    async def _episodes(
        run: _Pass,
        tags: tuple[str, ...],
        grid: npt.NDArray[np.float64],
        scores: Scores,
        episode: dict[str, Any] | None,
        *,
        step_s: float,
    ) -> dict[str, Any] | None:
        """Open and close the asset's episodes at the batch's transitions; track each one's peak.
        An opening carries ``change_started_at``: when the change behind it began, as the
        detector estimated it at the opening (``Scores.opened_from``)."""
        segment = 0  # first row of the open episode inside this batch
        began = dict(zip(scores.opened, scores.opened_from, strict=True))
        for i in sorted(scores.opened + scores.closed):
            if i in scores.opened:
                top = sorted(zip(tags, scores.contributions[i].tolist(), strict=True), key=lambda p: -p[1])[:3]
                at, peak = float(grid[i]), float(scores.score[i])
                change = store.to_datetime(at - (i - began[i]) * step_s).isoformat()
                ep = await run.open(None, MULTIVARIATE, at, peak, top=[[t, round(c, 4)] for t, c in top],
                                    change_started_at=change)  # fmt: skip
                episode, segment = {"id": ep, "started": at, "peak": peak}, i
            elif episode is not None:
                episode["peak"] = max(episode["peak"], float(scores.score[segment:i].max(initial=0.0)))
                await run.close(None, MULTIVARIATE, episode, float(grid[i]))
                episode = None
        if episode is not None:
            episode["peak"] = max(episode["peak"], float(scores.score[segment:].max(initial=0.0)))
        return episode

    async def _checks(self, run: _Pass, state: store.AssetState, samples: dict[int, store.Series],
                      mode: store.Series | None, until: float) -> None:  # fmt: skip
        names = {t.id: t.name for t in run.asset.tags}
        now = _data_clock(samples, state.scored_until, until)
        idle = self._idle_until(mode, now)
        for key, tag in state.checks.get("tags", {}).items():
            tag_id = int(key)
            limits = TagLimits.from_dict(tag["limits"])
            last = tag["stuck"]
            stuck = StuckState(*(float("nan") if last.get(k) is None else float(last[k])
                                 for k in ("last_change", "last_value")))  # fmt: skip
            times, values = samples.get(tag_id, (np.zeros(0), np.zeros(0)))
            running = ~self._out_of_mode(mode, times)  # a stopped machine is neither stuck nor out of range
            times, values = times[running], values[running]
            flags = run_checks(times, values, limits, self.config.checks, stuck, now=now,
                               new_after=state.scored_until, idle_until=idle)  # fmt: skip
            await store.write_anomalies(run.conn, [
                store.AnomalyRow(f.time, run.asset.site, run.asset.asset, tag_id, f.check, f.score, is_anomaly=True,
                                 details={"tag": names.get(tag_id), "value": f.value, "reason": f.reason})
                for f in flags
            ])  # fmt: skip
            run.summary.flags += len(flags)
            await self._check_episodes(run, (tag_id, names.get(tag_id, key)), tag["open"], flags, until)
            tag["stuck"] = {"last_change": None if np.isnan(stuck.last_change) else stuck.last_change,
                            "last_value": None if np.isnan(stuck.last_value) else stuck.last_value}  # fmt: skip

    async def _check_episodes(
        self, run: _Pass, tag: tuple[int, str], episodes: dict[str, dict[str, Any]], flags: list[Flag], until: float
    ) -> None:
        """A check's episode opens with its first flag and ends ``episode_quiet_s`` after its last."""
        for flag in flags:
            ep = episodes.setdefault(flag.check, {"id": None, "last_flag": None, "peak": 0.0})
            if ep["last_flag"] is not None and flag.time <= ep["last_flag"]:
                continue  # judged in an earlier run already
            if ep["id"] is None:
                ep["id"] = await run.open(tag, flag.check, flag.time, flag.score, reason=flag.reason)
                ep["started"], ep["peak"] = flag.time, flag.score
            ep["last_flag"], ep["peak"] = flag.time, max(ep["peak"], flag.score)
        for check, ep in episodes.items():
            if ep["id"] is not None and until - ep["last_flag"] >= self.config.episode_quiet_s:
                await run.close(tag[1], check, ep, ep["last_flag"])
                ep["id"] = None


def _data_clock(samples: dict[int, store.Series], since: float, until: float) -> float:
    """The newest sample of any of the asset's tags in (since, until], else ``since``.

    The stuck check runs on this clock, not the wall clock: a sensor that reports nothing
    new is stuck only while its neighbours show that the asset's data still arrives (a
    device or link that is down is not a stuck sensor)."""
    newest = [float(times[~np.isnan(values)][-1]) for times, values in samples.values() if not np.isnan(values).all()]
    return min(max([since, *newest]), until)
