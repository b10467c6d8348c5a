"""The blast radius the gate shows: the users it names and the tenant's primary domain."""

from __future__ import annotations

import uuid
from dataclasses import replace

import polars as pl

from batcher.errors import GraphError
from batcher.job.session import Session
from batcher.job.summary import Summary
from batcher.ledger import Ledger
from batcher.plan import Plan

NAMED = 20  # the gate names the users up to this many


async def for_the_gate(session: Session, ledger: Ledger, plan: Plan, preview: Summary) -> Summary:
    """``preview`` with the first users to act (by UPN where a look-up read it) and, when the
    gate will ask for it, the tenant's primary domain (one read; None if Graph refuses it)."""
    preview = replace(preview, users_named=named_users(ledger, plan))
    over = session.job.asks_domain_over
    if over is None or plan.users_in_reach <= over:
        return preview
    return replace(preview, primary_domain=await primary_domain(session))


def named_users(ledger: Ledger, plan: Plan, upto: int = NAMED) -> tuple[str, ...]:
    """The first ``upto`` users with a step to send, by UPN when the ledger's look-ups know it."""
    series = [p.to_send.head(upto) for p in plan.actions if p.to_send.len()]
    if not series:
        return ()
    first = pl.concat(series).unique(maintain_order=True).head(upto).to_list()
    lookups = ledger.lookups().drop_nulls("user_id").drop_nulls("user_principal_name")
    upns = dict(lookups.select("user_id", "user_principal_name").iter_rows())
    return tuple(str(upns.get(uid) or uid) for uid in first)


async def primary_domain(session: Session) -> str | None:
    """The tenant's default verified domain (GET /organization), None when it cannot be read
    (no permission, no answer): the gate then asks for the tenant ID instead."""
    client = await session.client()
    try:
        organizations = await client.organization(str(uuid.uuid4()))
    except GraphError:
        return None
    for organization in organizations:
        for domain in organization.get("verifiedDomains") or []:
            if isinstance(domain, dict) and domain.get("isDefault") and domain.get("name"):
                return str(domain["name"])
    return None
