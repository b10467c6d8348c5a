"""The HTML report's timeline: requests per budget (accepted, throttled, failed) over the run,
drawn by matplotlib as an inline SVG (no script, nothing fetched when the page opens)."""

from __future__ import annotations

import io
import re

import polars as pl

KINDS = ("accepted", "throttled", "failed")
COLOURS = {"accepted": "#2e7d32", "throttled": "#f9a825", "failed": "#c62828"}


def timeline_frame(attempts: pl.DataFrame, budget_of: dict[str, str]) -> pl.DataFrame:
    """(second, budget, kind, requests) from (started_at, action, outcome): each request in
    the second it left, counted as accepted, throttled or failed (every other answer, or
    none)."""
    if attempts.height == 0:
        return pl.DataFrame(
            schema={
                "second": pl.Int64,
                "budget": pl.String,
                "kind": pl.String,
                "requests": pl.UInt32,
            }
        )
    at = pl.col("started_at").str.to_datetime(time_zone="UTC", time_unit="ms")
    frame = attempts.with_columns(
        at=at,
        budget=pl.col("action").replace_strict(budget_of, default="other", return_dtype=pl.String),
        kind=pl.when(pl.col("outcome").is_in(["accepted", "throttled"]))
        .then(pl.col("outcome"))
        .otherwise(pl.lit("failed")),
    )
    start = frame.get_column("at").min()
    return (
        frame.with_columns(
            second=((pl.col("at") - pl.lit(start)).dt.total_seconds()).cast(pl.Int64)
        )
        .group_by("second", "budget", "kind")
        .len("requests")
        .sort("second", "budget", "kind")
    )


def timeline_svg(timeline: pl.DataFrame) -> str:
    """One panel per budget, requests per second stacked by kind; an SVG element to inline."""
    from matplotlib.figure import Figure  # only the HTML report loads matplotlib
    from matplotlib.ticker import MaxNLocator

    budgets = sorted(set(timeline.get_column("budget").to_list())) or ["(no request)"]
    figure = Figure(figsize=(9, 1.9 * len(budgets) + 0.6), layout="constrained")
    axes = figure.subplots(len(budgets), 1, squeeze=False, sharex=True)
    last = int(timeline.get_column("second").max() or 0) if timeline.height else 0  # type: ignore[arg-type]
    seconds = list(range(last + 1))
    for row, budget in enumerate(budgets):
        ax = axes[row][0]
        mine = timeline.filter(pl.col("budget") == budget)
        bottom = [0] * len(seconds)
        for kind in KINDS:
            counts = dict(
                mine.filter(pl.col("kind") == kind).select("second", "requests").iter_rows()
            )
            heights = [int(counts.get(s, 0)) for s in seconds]
            ax.bar(seconds, heights, bottom=bottom, width=1.0, label=kind, color=COLOURS[kind])
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        ax.set_title(f"budget: {budget}", loc="left", fontsize=10)
        ax.set_ylabel("requests / s")
        ax.legend(loc="upper right", fontsize=8)
    axes[-1][0].set_xlim(-0.5, last + 0.5)
    axes[-1][0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1][0].set_xlabel("seconds since the first request")
    out = io.StringIO()
    figure.savefig(out, format="svg", metadata={"Date": None})
    return _inline(out.getvalue())


def _inline(svg: str) -> str:
    """The <svg> element alone: no XML declaration, no DOCTYPE (which names a DTD by URL), no
    RDF metadata block."""
    svg = svg[svg.index("<svg") :]
    return re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.DOTALL)
