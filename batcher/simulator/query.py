"""OData for /users: the $filter grammar Graph accepts for look-ups, and $select."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

from batcher.inputs import GUID
from batcher.simulator.directory import DirectoryUser

MAX_EXPRESSIONS = 15
# Properties $filter may compare with eq or in; proxyAddresses only through any().
FILTERABLE = (
    "id",
    "userPrincipalName",
    "mail",
    "onPremisesSecurityIdentifier",
    "onPremisesImmutableId",
    "onPremisesSamAccountName",
)
ADVANCED_ONLY = ("onPremisesSamAccountName",)  # needs ConsistencyLevel: eventual and $count
SELECTABLE = {f.name.lower(): f.name for f in fields(DirectoryUser) if f.name != "privileged"}
DEFAULT_SELECT = ("id", "displayName", "mail", "userPrincipalName")
_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<name>[A-Za-z_]\w*(?:/[A-Za-z_]\w*)*)|(?P<punct>[(),:]))"
)


class QueryError(Exception):
    """A query Graph refuses with 400: ``code`` and ``message`` as Graph words them."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def unsupported(name: str) -> QueryError:
    return QueryError(
        "Request_UnsupportedQuery",
        f"Unsupported or invalid query filter clause specified for property '{name}' "
        "of resource 'User'.",
    )


@dataclass(frozen=True)
class Clause:
    """One comparison: ``name`` equals one of ``values`` (proxyAddresses: any of them does)."""

    name: str
    values: tuple[str, ...]


def parse_filter(text: str, *, advanced: bool) -> list[Clause]:
    """The clauses of a $filter joined by ``or`` (parentheses allowed); QueryError if Graph
    would refuse it. ``advanced``: the request is an advanced query (ConsistencyLevel and
    $count=true)."""
    clauses = _Parser(text).parse()
    count = sum(len(c.values) for c in clauses)
    if count > MAX_EXPRESSIONS:
        raise QueryError(
            "Request_UnsupportedQuery",
            "Too many child clauses specified in search filter expression containing 'OR' "
            f"operators: {count}. Max allowed: {MAX_EXPRESSIONS}.",
        )
    for clause in clauses:
        if clause.name in ADVANCED_ONLY and not advanced:
            raise unsupported(clause.name)
        if clause.name == "id":
            for value in clause.values:
                if not GUID.match(value):
                    raise QueryError("Request_BadRequest", f"Invalid object identifier '{value}'.")
    return clauses


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str]] = []
        position = 0
        while position < len(text.rstrip()):
            match = _TOKEN.match(text, position)
            if match is None or match.lastgroup is None:
                raise self._syntax(position)
            self.tokens.append((match.lastgroup, match.group(match.lastgroup)))
            position = match.end()
        self.at = 0

    def _syntax(self, position: int | None = None) -> QueryError:
        where = f" at position {position}" if position is not None else ""
        return QueryError(
            "BadRequest", f"Invalid filter clause: syntax error{where} in '{self.text}'."
        )

    def _next(self, kind: str, value: str | None = None) -> str:
        if self.at >= len(self.tokens):
            raise self._syntax()
        got_kind, got = self.tokens[self.at]
        if got_kind != kind or (value is not None and got != value):
            raise self._syntax()
        self.at += 1
        return got

    def _peek(self, value: str) -> bool:
        return self.at < len(self.tokens) and self.tokens[self.at][1] == value

    def parse(self) -> list[Clause]:
        clauses = self._or()
        if self.at != len(self.tokens):
            word = self.tokens[self.at][1]
            if word == "and":
                raise QueryError(
                    "Request_UnsupportedQuery", "The simulator filters with 'or' only."
                )
            raise self._syntax()
        return clauses

    def _or(self) -> list[Clause]:
        clauses = self._term()
        while self._peek("or"):
            self.at += 1
            clauses += self._term()
        return clauses

    def _term(self) -> list[Clause]:
        if self._peek("("):
            self.at += 1
            clauses = self._or()
            self._next("punct", ")")
            return clauses
        name = self._next("name")
        if name.lower() == "proxyaddresses/any":
            return [self._any()]
        canonical = SELECTABLE.get(name.lower(), name)
        operator = self._next("name")
        if operator not in ("eq", "in"):
            raise unsupported(canonical) if operator in _OPERATORS else self._syntax()
        if canonical not in FILTERABLE:
            raise unsupported(canonical)
        if operator == "eq":
            return [Clause(canonical, (self._string(),))]
        self._next("punct", "(")
        values = [self._string()]
        while self._peek(","):
            self.at += 1
            values.append(self._string())
        self._next("punct", ")")
        return [Clause(canonical, tuple(values))]

    def _any(self) -> Clause:
        """proxyAddresses/any(p:p eq 'smtp:ann@contoso.com')"""
        self._next("punct", "(")
        variable = self._next("name")
        self._next("punct", ":")
        self._next("name", variable)
        if self._next("name") != "eq":
            raise unsupported("proxyAddresses")
        value = self._string()
        self._next("punct", ")")
        return Clause("proxyAddresses", (value,))

    def _string(self) -> str:
        return self._next("string")[1:-1].replace("''", "'")


_OPERATORS = ("ne", "gt", "ge", "lt", "le", "startswith", "endswith", "has")


def parse_select(text: str | None) -> tuple[str, ...]:
    """The properties a $select asks for (``id`` always included); Graph's default set
    without one. QueryError for a property users do not have."""
    if text is None:
        return DEFAULT_SELECT
    wanted = ["id"]
    for part in text.split(","):
        name = SELECTABLE.get(part.strip().lower())
        if name is None:
            raise QueryError(
                "BadRequest",
                f"Could not find a property named '{part.strip()}' on type 'microsoft.graph.user'.",
            )
        if name not in wanted:
            wanted.append(name)
    return tuple(wanted)


def project(user: DirectoryUser, select: tuple[str, ...]) -> dict[str, Any]:
    shown = user.to_graph()
    return {name: shown[name] for name in select}
