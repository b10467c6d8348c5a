"""Users' inbox rules and mail folders: listed, read and disabled, per mailbox."""

from __future__ import annotations

import hashlib
import time
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from batcher.simulator.faults import directory_fault
from batcher.simulator.replies import Context

NO_MAILBOX = "The mailbox is either inactive, soft-deleted, or is hosted on-premise."
# Well-known folders (the names mailFolders('{name}') takes), and the names a mailbox shows
_WELL_KNOWN = {
    "inbox": "Inbox",
    "archive": "Archive",
    "conversationhistory": "Conversation History",
    "deleteditems": "Deleted Items",
    "junkemail": "Junk Email",
}
_OTHER_FOLDERS = {"rssfeeds": "RSS Feeds", "newsletters": "Newsletters"}


def _folder_id(user_id: str, name: str) -> str:
    return f"AAMk{name}-{user_id[:8]}"


def _rules_of(user_id: str, count: int = 9) -> list[dict[str, Any]]:
    """A mailbox's rules, made from its ID: the system rules, an attacker's forward, a hide in
    RSS Feeds, a delete, a rule already disabled and two harmless ones; beyond nine (``count``),
    a forward, a delete and a harmless flag in turn (rule n: n % 3 == 2 is harmless)."""

    def rule(n: int, name: str, actions: dict[str, Any], enabled: bool = True) -> dict[str, Any]:
        return {
            "id": f"rule-{user_id[:8]}-{n}",
            "displayName": name,
            "sequence": n + 1,
            "isEnabled": enabled,
            "conditions": {"subjectContains": ["invoice"]} if n % 2 else {},
            "actions": actions,
        }

    outside = [{"emailAddress": {"address": "drop@attacker.example"}}]
    more: list[dict[str, Any]] = [{"forwardTo": outside}, {"delete": True}, {"markAsRead": True}]
    junk = _folder_id(user_id, "junkemail")
    return [
        rule(0, "Junk E-Mail Rule", {"moveToFolder": junk}),
        rule(1, "Microsoft.Exchange.OOF.KnownSenders.Rule", {"forwardTo": outside}),
        rule(2, "Delegate Rule", {"redirectTo": outside}),
        rule(3, ".", {"forwardTo": outside, "stopProcessingRules": True}),
        rule(4, "..", {"moveToFolder": _folder_id(user_id, "rssfeeds"), "markAsRead": True}),
        rule(5, "invoices", {"delete": True}),
        rule(6, "old forward", {"forwardAsAttachmentTo": outside}, enabled=False),
        rule(7, "newsletters", {"moveToFolder": _folder_id(user_id, "newsletters")}),
        rule(8, "flag boss", {"markImportance": "high"}),
        *(rule(n, f"rule {n}", more[n % 3]) for n in range(9, count)),
    ]


def has_mailbox(user_id: str) -> bool:
    """One user in seven has no Exchange Online mailbox."""
    return int(hashlib.sha256(user_id.encode()).hexdigest()[:8], 16) % 7 != 3


class MailRules:
    """GET .../mailFolders/inbox/messageRules; PATCH .../messageRules/{id}; GET
    .../mailFolders/{id or well-known name}. A user without a mailbox answers 404
    MailboxNotEnabledForRESTAPI."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.rules: dict[str, list[dict[str, Any]]] = {}
        self.changed: list[tuple[str, str, bool]] = []  # (user, rule, isEnabled) per PATCH
        self.changed_at: list[float] = []  # time.monotonic() of each, in the same order
        self.lists = 0
        self.folder_reads = 0

    def routes(self) -> list[Route]:
        base = "/{version}/users/{key}/mailFolders"
        return [
            Route(base + "/inbox/messageRules", self._list, methods=["GET"]),
            Route(base + "/inbox/messageRules/{rule_id}", self._patch, methods=["PATCH"]),
            Route(base + "/{folder}", self._folder, methods=["GET"]),
        ]

    def of(self, user_id: str) -> list[dict[str, Any]]:
        count = self.ctx.settings.mail_rules
        return self.rules.setdefault(user_id.lower(), _rules_of(user_id.lower(), count))

    def _gate(self, request: Request) -> Response | None:
        refused = self.ctx.check(request) or directory_fault(self.ctx, request)
        if refused is not None:
            return refused
        if not has_mailbox(request.path_params["key"].lower()):
            return self.ctx.error(request, 404, "MailboxNotEnabledForRESTAPI", NO_MAILBOX)
        return None

    async def _list(self, request: Request) -> Response:
        refused = self._gate(request)
        if refused is not None:
            return refused
        self.lists += 1
        rules = self.of(request.path_params["key"])
        size = self.ctx.settings.mail_rules_page_size
        skip = int(request.query_params.get("$skiptoken", "0") or 0)
        body: dict[str, Any] = {"value": rules[skip : skip + size]}
        if skip + size < len(rules):  # more than a page: where the next one is
            query = {k: v for k, v in request.query_params.items() if k != "$skiptoken"}
            query["$skiptoken"] = str(skip + size)
            body["@odata.nextLink"] = str(request.url.replace(query=urlencode(query)))
        return self.ctx.json(request, body)

    async def _patch(self, request: Request) -> Response:
        refused = self._gate(request)
        if refused is not None:
            return refused
        user_id = request.path_params["key"].lower()
        found = next(
            (r for r in self.of(user_id) if r["id"] == request.path_params["rule_id"]), None
        )
        if found is None:
            return self.ctx.error(request, 404, "ErrorItemNotFound", "The rule was not found.")
        body = await request.json()
        if set(body) - {"isEnabled"} or not isinstance(body.get("isEnabled"), bool):
            return self.ctx.error(request, 400, "ErrorInvalidRequest", "Only isEnabled here.")
        found["isEnabled"] = body["isEnabled"]
        self.changed.append((user_id, found["id"], body["isEnabled"]))
        self.changed_at.append(time.monotonic())
        return self.ctx.json(request, found)

    async def _folder(self, request: Request) -> Response:
        refused = self._gate(request)
        if refused is not None:
            return refused
        self.folder_reads += 1
        user_id, wanted = request.path_params["key"].lower(), request.path_params["folder"]
        for name, shown in (_WELL_KNOWN | _OTHER_FOLDERS).items():
            if wanted in (_folder_id(user_id, name), name if name in _WELL_KNOWN else None):
                body = {"id": _folder_id(user_id, name), "displayName": shown}
                return self.ctx.json(request, body)
        return self.ctx.error(request, 404, "ErrorItemNotFound", "The folder was not found.")
