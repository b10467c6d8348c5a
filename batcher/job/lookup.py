"""The look-up run and resolve share: what to look up, what a ledger knows, what Graph says."""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from batcher.eventlog import Event
from batcher.inputs import InputSet
from batcher.job.session import Session
from batcher.workers.resolver import Resolver

_KEY = ["kind", "input_value"]  # one identity


def to_look_up(read: InputSet, *, object_ids: bool) -> pl.DataFrame:
    """The identities to look up (input_value, kind, source_file, source_row): UPNs, e-mail
    addresses and SIDs, after the object IDs when ``object_ids`` (to learn that each user
    exists, and its type)."""
    identities = read.identities.select("input_value", "kind", "source_file", "source_row")
    if not (object_ids and read.ids.height):
        return identities
    ids = read.ids.select(
        pl.col("user_id").alias("input_value"),
        pl.lit("object_id").alias("kind"),
        "source_file",
        "source_row",
    )
    return pl.concat([ids, identities])


def split_cached(wanted: pl.DataFrame, known: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The outcomes of ``wanted`` that ``known`` (a ledger's look-ups) holds, and the
    identities still to look up."""
    cached = known.join(wanted.select(_KEY), on=_KEY)
    todo = wanted.join(cached.select(_KEY), on=_KEY, how="anti")
    return cached, todo


def _keep_nowhere(outcomes: pl.DataFrame) -> None:
    """Without a ledger, the outcomes are kept nowhere but in the table returned."""


async def look_up(
    session: Session,
    todo: pl.DataFrame,
    *,
    record: Callable[[pl.DataFrame], None] = _keep_nowhere,
    announce: bool = False,
) -> tuple[pl.DataFrame, int]:
    """Look ``todo`` up in the directory: the outcomes (LOOKUP_COLUMNS), and how many requests
    it took. ``record`` keeps outcomes as they come; ``announce`` tells the observer."""
    job = session.job
    control = session.control()
    resolver = Resolver(
        await session.client(),
        session.caller(control),
        record=record,
        max_in_flight=job.settings.send.max_in_flight,
        control=control,
    )
    if announce:
        job.observer(Event.LOOKING_UP, identities=todo.height)
    with control.scope():  # a breaker (403, unreachable) ends the look-up at once
        found = await resolver.resolve(todo)
    if control.breaker.tripped is not None:
        raise control.breaker.tripped
    return found, resolver.requests
