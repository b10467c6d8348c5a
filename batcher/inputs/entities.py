"""Users in incident JSON: Sentinel incident entities, Defender XDR incidents, Graph alerts_v2.

The shape is told from the structure, never the file name. Every entity is a row, numbered from 1
in the order of the flattened list; user and mailbox entities give one value each (the first
valid one of their fields, in a fixed order), every other entity (host, IP, file, URL...) is
skipped and counted.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from batcher.inputs.values import kinds

# A quick look at the text before parsing it whole: only these shapes hold entity lists.
HINT = re.compile(r'"(?:entities|evidence|alerts)"\s*:')

SENTINEL = "Sentinel incident entities"
DEFENDER = "Defender XDR incidents"
GRAPH = "Graph security alerts_v2"
_GRAPH_TYPE = "#microsoft.graph.security."

# Per shape and entity kind (lower case): the fields that may name the user, best first.
# "a@b" joins two fields (Sentinel's accountName and upnSuffix); "x.y" is a nested field.
_FIELDS: dict[str, dict[str, tuple[str, ...]]] = {
    SENTINEL: {
        "account": ("aadUserId", "accountName@upnSuffix", "sid"),
        "mailbox": ("externalDirectoryObjectId", "upn", "mailboxPrimaryAddress"),
    },
    DEFENDER: {
        "user": ("aadUserId", "userPrincipalName", "userSid"),
        "mailbox": ("mailboxAddress",),
    },
    GRAPH: {
        "userevidence": (
            "userAccount.azureAdUserId",
            "userAccount.userPrincipalName",
            "userAccount.userSid",
        ),
        "mailboxevidence": (
            "userAccount.azureAdUserId",
            "userAccount.userPrincipalName",
            "primaryAddress",
        ),
    },
}
# What names an entity without a usable value in its reject reason.
_NAMES = (
    "displayName",
    "friendlyName",
    "accountName",
    "mailboxDisplayName",
    "userAccount.accountName",
)


@dataclass(frozen=True)
class Entities:
    """The user values of an incident file: one per user entity, others only counted."""

    shape: str  # SENTINEL, DEFENDER or GRAPH
    values: list[str | None]  # the chosen value of each user entity (None: none usable)
    rows: list[int]  # each user entity's position among all entities, from 1
    reasons: list[str | None]  # why a user entity without a value is invalid
    skipped: Counter[str]  # other entities by kind
    used: Counter[tuple[str, str]]  # (entity kind, field or "") -> how many user entities

    @property
    def column(self) -> str:
        """What was read, for the ID column's place in messages: ``Account, Mailbox entities``."""
        return ", ".join(dict.fromkeys(kind for kind, _ in self.used)) + " entities"

    @property
    def reason(self) -> str:
        """Which fields gave the values: ``Sentinel incident entities: Account.aadUserId (3)``."""
        used = ", ".join(
            f"{kind}.{field} ({n})" if field else f"{kind} without one ({n})"
            for (kind, field), n in self.used.items()
        )
        return f"{self.shape}: user values from {used}"


def find_entities(document: object) -> Entities | None:
    """The users of an incident document, or None when it is not one of the known shapes."""
    found = [e for group in _entity_lists(document) for e in group]
    flat = [e for e in found if isinstance(e, dict)]
    shape = _shape(flat[0]) if flat else None
    if shape is None or len(flat) < len(found) or any(_shape(e) != shape for e in flat):
        return None
    return _users(shape, flat)


def _entity_lists(document: object) -> Iterator[list[object]]:
    """Every entity or evidence list: in the document, its incidents, alerts or ``value``."""
    items: list[object]
    if isinstance(document, dict) and isinstance(document.get("value"), list):
        items = document["value"]
    elif isinstance(document, dict):
        items = [document]
    elif isinstance(document, list) and document and all(_shape(e) == SENTINEL for e in document):
        yield document  # a bare array of Sentinel entities
        return
    elif isinstance(document, list):
        items = document
    else:
        return
    for item in items:
        if not isinstance(item, dict):
            return
        alerts = item.get("alerts")
        for holder in [item, *(alerts if isinstance(alerts, list) else [])]:
            for key in ("entities", "evidence"):
                if isinstance(holder, dict) and isinstance(holder.get(key), list):
                    yield holder[key]


def _shape(entity: object) -> str | None:
    if not isinstance(entity, dict):
        return None
    if str(entity.get("@odata.type", "")).startswith(_GRAPH_TYPE):
        return GRAPH
    if isinstance(entity.get("entityType"), str):
        return DEFENDER
    if isinstance(entity.get("kind"), str) and isinstance(entity.get("properties"), dict):
        return SENTINEL
    return None


def _kind(shape: str, entity: dict[str, object]) -> str:
    if shape == DEFENDER:
        return str(entity["entityType"])
    if shape == GRAPH:
        return str(entity["@odata.type"]).removeprefix(_GRAPH_TYPE)
    return str(entity["kind"])


def _users(shape: str, entities: list[dict[str, object]]) -> Entities:
    """Pick each user entity's value: its first valid field, else its first present one."""
    skipped: Counter[str] = Counter()
    users: list[tuple[int, str, list[tuple[str, str]], dict[str, object]]] = []
    for row, entity in enumerate(entities, start=1):
        kind = _kind(shape, entity)
        fields = _FIELDS[shape].get(kind.lower())
        if fields is None:
            skipped[kind] += 1
            continue
        props = entity.get("properties") if shape == SENTINEL else entity
        props = props if isinstance(props, dict) else {}
        present = [(f, v) for f in fields if (v := _field(props, f))]
        users.append((row, kind, present, props))
    candidates = [value for _, _, present, _ in users for _, value in present]
    valid = iter(kind is not None for kind in kinds(candidates))
    values: list[str | None] = []
    reasons: list[str | None] = []
    used: Counter[tuple[str, str]] = Counter()
    for _, kind, present, props in users:
        ok = [next(valid) for _ in present]
        if present:
            field, value = present[ok.index(True) if True in ok else 0]
            values.append(value)
            reasons.append(None)
            used[kind, field] += 1
        else:
            values.append(None)
            reasons.append(_no_value(kind, _FIELDS[shape][kind.lower()], props))
            used[kind, ""] += 1
    rows = [row for row, _, _, _ in users]
    return Entities(shape, values, rows, reasons, skipped, used)


def _field(props: dict[str, object], name: str) -> str | None:
    """A field's text: ``a@b`` joins two fields, ``x.y`` reads a nested one; blank is None."""
    if "@" in name:
        parts = [_field(props, part) for part in name.split("@")]
        return "@".join(p for p in parts if p) if all(parts) else None
    value: object = props
    for part in name.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None or isinstance(value, dict | list | bool):
        return None
    text = str(value).strip()
    return text or None


def _no_value(kind: str, fields: tuple[str, ...], props: dict[str, object]) -> str:
    """The reject reason of a user entity none of whose fields holds a value."""
    name = next((n for f in _NAMES if (n := _field(props, f))), None)
    who = f"{kind} entity {name!r}" if name else f"{kind} entity"
    wanted = fields[0] if len(fields) == 1 else f"{', '.join(fields[:-1])} or {fields[-1]}"
    return f"{who} has no {wanted}"
