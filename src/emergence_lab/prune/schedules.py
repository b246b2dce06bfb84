"""Schedules (when, and how much of what remains, each step prunes) and resets (where the
surviving weights restart from after a step: lottery-ticket rewinding, a fresh init). The
schedule is separate from the score, so any strategy runs under any schedule."""

from __future__ import annotations

from emergence_lab.prune.base import RESETS, SCHEDULES, STRATEGIES, PruningConfig, ResetEntry, ScheduleEntry


def _equal(amount: float, epoch: int, steps: int, interval: int) -> list[tuple[int, float]]:
    rate = 1 - (1 - amount) ** (1 / steps)
    return [(epoch + i * interval, rate) for i in range(steps)]


def _cubic(amount: float, epoch: int, steps: int, interval: int) -> list[tuple[int, float]]:
    """Zhu & Gupta (2017): sparsity s_t = amount * (1 - (1 - t / steps)^3) after step t."""
    target = [amount * (1 - (1 - t / steps) ** 3) for t in range(steps + 1)]
    return [(epoch + (t - 1) * interval, 1 - (1 - target[t]) / (1 - target[t - 1]))
            for t in range(1, steps + 1)]


SCHEDULES.add(ScheduleEntry("equal", _equal, "equal steps"))


SCHEDULES.add(ScheduleEntry("cubic", _cubic, "gradual (cubic)"))


RESETS.add(ResetEntry("none", lambda sources: None, lambda p: ""))


RESETS.add(ResetEntry("rewind", lambda sources: sources.rewind, lambda p: f"rewind{p.rewind_epoch}",
                      ("rewind_epoch",)))


RESETS.add(ResetEntry("reinit", lambda sources: sources.fresh(), lambda p: "reinit"))


def schedule(p: PruningConfig) -> list[tuple[int, float]]:
    """(epoch, share of the remaining weights to prune) of each step; none for a strategy that
    never prunes."""
    if not STRATEGIES[p.name].prunes:
        return []
    return SCHEDULES[p.schedule].events(p.amount, p.epoch, p.steps, p.interval)
