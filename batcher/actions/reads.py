"""Where each read is paced and the permission it needs: verify's reads, the tenant, sources."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from batcher.actions.kinds import Budget, Read

USER_READ_PERMISSION = (
    "User.Read.All (an application permission; for a delegated sign-in, a directory-reader "
    "role such as Directory Readers)"
)


@dataclass(frozen=True)
class Source:
    """Where a read is paced, and the permission it needs (named when Graph refuses it)."""

    budget: Budget
    permission: str


# verify reads each action's effect here; the directory look-ups read users like Read.USER
READS: dict[Read, Source] = {
    Read.RISKY_USER: Source(Budget.IDENTITY_PROTECTION, "IdentityRiskyUser.Read.All"),
    Read.USER: Source(Budget.DIRECTORY_READS, USER_READ_PERMISSION),
}
# Which tenant a token signs in to, when neither the token (a JWT's tid) nor [auth] tenant_id
# says: GET /organization?$select=id, one directory read before the ledger is chosen
TENANT_READ = Source(
    Budget.DIRECTORY_READS,
    "Organization.Read.All (User.Read for a delegated sign-in); or set [auth] tenant_id",
)


class Feed(StrEnum):
    """Where run reads its users straight from Graph, beside files."""

    INCIDENT = "incident"  # GET /security/incidents/{id}?$expand=alerts
    RISKY = "risky"  # GET /identityProtection/riskyUsers?$filter=riskLevel ... atRisk
    SIGN_INS = "sign_ins"  # GET /auditLogs/signIns?$filter=ipAddress ... createdDateTime


# each source's budget and permission; risky users spend Identity Protection's 1 request/s, as
# confirm does
FEEDS: dict[Feed, Source] = {
    Feed.INCIDENT: Source(
        Budget.SECURITY, "SecurityIncident.Read.All (and SecurityAlert.Read.All)"
    ),
    Feed.RISKY: Source(Budget.IDENTITY_PROTECTION, "IdentityRiskyUser.Read.All"),
    Feed.SIGN_INS: Source(Budget.REPORTS, "AuditLog.Read.All (and an Entra ID P1 licence)"),
}
