"""Who batcher must not touch, decided once per run as data: one row per user, with the verdict
(act, protected, held_back), the entry or role that decided it, and the user's roles."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from batcher.actions import Verdict

VERDICT_COLUMNS = {
    "user_id": pl.String,
    "verdict": pl.String,
    "why": pl.String,  # the protecting entry ("operator": the signed-in user), or the roles
    "roles": pl.String,  # privileged roles, "; "-joined (null: none known)
}
OPERATOR = "the signed-in operator"


def decide(
    user_ids: pl.Series,
    protected: Mapping[str, str],
    roles: Mapping[str, list[str]],
    operator: str | None = None,
    *,
    include_admins: bool = False,
) -> pl.DataFrame:
    """Each user's verdict (VERDICT_COLUMNS, in ``user_ids``' order): protected (by a
    [safety] entry, or as the signed-in ``operator``) before held back (a privileged role,
    unless ``include_admins``) before act."""
    rows: list[tuple[str, str, str | None, str | None]] = []
    for uid in user_ids.to_list():
        key = uid.lower()
        held = roles.get(key)
        shown = "; ".join(held) if held else None
        if operator is not None and key == operator:
            rows.append((uid, Verdict.PROTECTED.value, OPERATOR, shown))
        elif key in protected:
            rows.append((uid, Verdict.PROTECTED.value, protected[key], shown))
        elif held and not include_admins:
            rows.append((uid, Verdict.HELD_BACK.value, shown, shown))
        else:
            rows.append((uid, Verdict.ACT.value, None, shown))
    return pl.DataFrame(rows, schema=VERDICT_COLUMNS, orient="row")


def guarded(verdicts: pl.DataFrame) -> pl.DataFrame:
    """The users not acted on in full (protected or held back)."""
    return verdicts.filter(pl.col("verdict") != Verdict.ACT.value)


def none() -> pl.DataFrame:
    return pl.DataFrame(schema=VERDICT_COLUMNS)
