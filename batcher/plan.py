"""Decide what still needs sending: input IDs minus what the ledger already settled."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import polars as pl

from batcher.inputs import InputSet


@dataclass(frozen=True)
class Plan:
    """The IDs to send, in input order, and what the ledger already knows of the rest."""

    to_send: pl.Series  # user_id, input order
    new_ids: pl.DataFrame  # user_id, source_file, source_row: not yet in the ledger
    already_done: int  # confirmed earlier
    failed_before: int  # failed permanently earlier: left for `batcher replay`
    batch_size: int

    @property
    def batches(self) -> int:
        return math.ceil(self.to_send.len() / self.batch_size)

    def iter_batches(self) -> Iterator[list[str]]:
        ids = self.to_send.to_list()
        for start in range(0, len(ids), self.batch_size):
            yield ids[start : start + self.batch_size]

    def seconds_at(self, rate_per_second: float) -> float:
        """Time the sends take at the given request rate (one request per batch)."""
        return self.batches / rate_per_second


def make_plan(inputs: InputSet, known: pl.DataFrame, batch_size: int) -> Plan:
    """``known`` holds the ledger's (user_id, state); states are those of ledger.State."""
    if known.height == 0:  # a first run: everything is new (and the join would cost seconds)
        return Plan(
            to_send=inputs.ids.get_column("user_id"),
            new_ids=inputs.ids.select("user_id", "source_file", "source_row"),
            already_done=0,
            failed_before=0,
            batch_size=batch_size,
        )
    joined = inputs.ids.join(known, on="user_id", how="left", maintain_order="left")
    state = pl.col("state")
    return Plan(
        to_send=joined.filter(state.is_null() | state.is_in(["planned", "sending", "unknown"]))
        .get_column("user_id")
        .alias("user_id"),
        new_ids=joined.filter(state.is_null()).select("user_id", "source_file", "source_row"),
        already_done=joined.filter(state == "confirmed").height,
        failed_before=joined.filter(state == "failed").height,
        batch_size=batch_size,
    )
