"""Outlook's budget is per mailbox: one pacer per key, made on demand, a cap on those kept."""

from __future__ import annotations

import anyio

from batcher.config import Settings
from batcher.job.session import budget_pacers, budget_specs
from batcher.pacer import BudgetSpec, KeyedPacers, Limit


def test_each_mailbox_gets_its_own_window_and_one_mailbox_never_waits_for_another() -> None:
    now = [0.0]
    pacers = KeyedPacers(BudgetSpec((Limit(2, 10.0),), 4), 8, clock=lambda: now[0])

    async def starts() -> list[float]:
        got = []
        for key in ("a", "a", "b", "b"):
            got.append(await pacers.get(key).acquire())
        return got

    assert anyio.run(starts) == [0.0, 0.0, 0.0, 0.0]  # each mailbox's window of 2 is its own
    assert pacers.get("a") is pacers.get("a") and pacers.created == 2


def test_at_most_the_cap_of_mailbox_pacers_is_kept_the_least_recently_used_dropped() -> None:
    pacers = KeyedPacers(BudgetSpec((Limit(10, 600.0),), 4), 3)
    first = pacers.get("m0")
    for key in ("m1", "m2", "m3"):
        pacers.get(key)
    assert len(pacers) == 3
    assert pacers.get("m0") is not first  # dropped as the oldest, made again


def test_the_reports_and_outlook_budgets_default_to_microsofts_figures() -> None:
    specs = {b.value: s for b, s in budget_specs(Settings()).items()}
    assert specs["reports"].limits == (Limit(5, 10.0),)
    assert specs["outlook"].limits == (Limit(10_000, 600.0),) and specs["outlook"].at_once == 4
    assert isinstance(
        budget_pacers(Settings())[
            next(b for b in budget_specs(Settings()) if b.value == "outlook")
        ],
        KeyedPacers,
    )
