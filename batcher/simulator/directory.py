"""The simulated directory: users, looked up by ID, UPN, mail, proxy address or SID."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import ConfigDict, TypeAdapter, ValidationError

from batcher.errors import ConfigError
from batcher.inputs import GUID

# Object IDs of the open directory's users: uuid5 of this namespace and the lower-cased address
# (or upper-cased SID), so the same address is the same user in every run and process.
NAMESPACE = uuid.UUID("5d6c1f0e-9a43-4b7e-8f0a-2c1b9e7d3a55")
ADDRESS = re.compile(r"^[^@\s]+@[a-z0-9-]+(?:\.[a-z0-9-]+)+$", re.IGNORECASE)
SID = re.compile(r"^S-1(?:-\d+)+$", re.IGNORECASE)
# Properties the directory indexes for look-ups (proxyAddresses: each address, with its prefix).
INDEXED = (
    "userPrincipalName",
    "mail",
    "proxyAddresses",
    "onPremisesSecurityIdentifier",
    "onPremisesSamAccountName",
    "onPremisesImmutableId",
)


@dataclass
class DirectoryUser:
    """A user as Graph shows it, plus ``privileged``: an administrator, whom only a caller with
    a privileged role may disable. Without ``id``, the ID is derived from the UPN."""

    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid")

    id: str = ""
    userPrincipalName: str = ""
    mail: str | None = None
    proxyAddresses: list[str] = field(default_factory=list)
    onPremisesSecurityIdentifier: str | None = None
    onPremisesSamAccountName: str | None = None
    onPremisesImmutableId: str | None = None
    userType: str = "Member"  # or "Guest"
    accountEnabled: bool = True
    signInSessionsValidFromDateTime: str | None = None
    displayName: str | None = None
    onPremisesSyncEnabled: bool | None = None  # True: mastered on-premises (AD Connect)
    lastPasswordChangeDateTime: str | None = None
    privileged: bool = False

    def __post_init__(self) -> None:
        if not self.userPrincipalName:
            raise ValueError("a user needs a userPrincipalName")
        self.id = (self.id or derived_id(self.userPrincipalName)).lower()
        if not GUID.match(self.id):
            raise ValueError(f"id {self.id!r} is not a GUID")
        if self.userType not in ("Member", "Guest"):
            raise ValueError(f"userType {self.userType!r} is neither Member nor Guest")

    def to_graph(self) -> dict[str, Any]:
        """The user's Graph properties (``privileged`` is the simulator's, not Graph's)."""
        shown = asdict(self)
        del shown["privileged"]
        return shown


def derived_id(value: str) -> str:
    """The open directory's object ID for an address or SID."""
    key = value.upper() if SID.match(value) else value.lower()
    return str(uuid.uuid5(NAMESPACE, key))


def synced(user_id: str) -> bool | None:
    """The open directory is a hybrid tenant: about one user in 16 (those whose object ID ends
    in 0) is synced from on-premises, so the sample inputs hold a few."""
    return True if user_id.endswith("0") else None


class Directory:
    """The tenant's users. Open (``users`` None): any well-formed address, SID or object ID
    looked up exists, created on first sight and remembered. Closed: only the users given,
    and those added later with ``add``. Look-ups ignore case.

    Change a user's looked-up properties (UPN, mail, ...) only before ``add``: they are indexed.
    """

    def __init__(self, users: Iterable[DirectoryUser] | None = None) -> None:
        self.open = users is None
        self._by_id: dict[str, DirectoryUser] = {}
        self._index: dict[tuple[str, str], list[str]] = {}  # several users may share a mail
        for user in users or ():
            self.add(user)

    def add(self, user: DirectoryUser) -> DirectoryUser:
        self._by_id[user.id] = user
        for name in INDEXED:
            value = getattr(user, name)
            for each in value if isinstance(value, list) else [value]:
                if each:
                    owners = self._index.setdefault((name, each.lower()), [])
                    if user.id not in owners:
                        owners.append(user.id)
        return user

    def get(self, user_id: str) -> DirectoryUser | None:
        """The user with this object ID, if the directory knows them (never creates one)."""
        return self._by_id.get(user_id.lower())

    def __iter__(self) -> Iterator[DirectoryUser]:
        return iter(list(self._by_id.values()))

    def __len__(self) -> int:
        return len(self._by_id)

    def peek(self, key: str) -> DirectoryUser | None:
        """The known user a URL's key (object ID or UPN) names, without creating one."""
        return self.lookup(key, create=False)

    def lookup(self, key: str, *, create: bool = True) -> DirectoryUser | None:
        """The (first) user a URL's key (object ID or UPN) names; the open directory creates
        them unless ``create`` is False."""
        name = "id" if GUID.match(key) else "userPrincipalName"
        found = self.find_all(name, key, create=create)
        return found[0] if found else None

    def find_all(self, name: str, value: str, *, create: bool = True) -> list[DirectoryUser]:
        """Every user whose property ``name`` equals ``value``, ignoring case (proxyAddresses:
        one of them, e.g. smtp:ann@contoso.com); the open directory creates one if none, unless
        ``create`` is False."""
        if name == "id":
            user = self.get(value)
            users = [user] if user is not None else []
        else:
            users = [self._by_id[uid] for uid in self._index.get((name, value.lower()), [])]
        if users or not self.open or not create:
            return users
        made = self._create(name, value)
        return [made] if made is not None else []

    def _create(self, name: str, value: str) -> DirectoryUser | None:
        if name == "id":
            made = _user_for_id(value) if GUID.match(value) else None
        elif name == "onPremisesSecurityIdentifier":
            made = _user_for_sid(value) if SID.match(value) else None
        elif name in ("userPrincipalName", "mail"):
            made = self._user_for_address(value)
        elif name == "proxyAddresses" and value.lower().startswith("smtp:"):
            made = self._user_for_address(value[len("smtp:") :])
        else:
            made = None
        if made is None:
            return None
        return self._by_id.get(made.id) or self.add(made)

    def _user_for_address(self, address: str) -> DirectoryUser | None:
        """A new member (or guest, for #EXT#) with this address, unless it is taken or bad."""
        address = address.lower()
        taken = ("userPrincipalName", "mail", "proxyAddresses")
        if not ADDRESS.match(address) or any(
            (name, value) in self._index
            for name, value in zip(taken, (address, address, f"smtp:{address}"), strict=True)
        ):
            return None
        return DirectoryUser(
            id=derived_id(address),
            onPremisesSyncEnabled=synced(derived_id(address)),
            userPrincipalName=address,
            mail=address,
            proxyAddresses=[f"SMTP:{address}"],
            userType="Guest" if "#ext#" in address else "Member",
            displayName=address.split("@", 1)[0],
        )


def _user_for_id(user_id: str) -> DirectoryUser:
    return DirectoryUser(
        id=user_id,
        userPrincipalName=f"{user_id.lower()}@simulator.invalid",
        onPremisesSyncEnabled=synced(user_id.lower()),
    )


def _user_for_sid(sid: str) -> DirectoryUser:
    uid = derived_id(sid)
    return DirectoryUser(
        id=uid,
        userPrincipalName=f"{uid}@simulator.invalid",
        onPremisesSecurityIdentifier=sid.upper(),
        onPremisesSyncEnabled=True,  # an on-premises SID: synced from Active Directory
    )


_USERS = TypeAdapter(list[DirectoryUser])


def load_directory(path: Path) -> list[DirectoryUser]:
    """The users in a directory file (a JSON array of users); ConfigError saying what to fix."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"[simulator] directory_file {path}: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"[simulator] directory_file {path}: not JSON ({exc})") from None
    try:
        return _USERS.validate_python(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        problem = f"{where}: {err['msg']}" if where else err["msg"]
        raise ConfigError(
            f"[simulator] directory_file {path}: {problem}; it must be a JSON array of users "
            'such as {"userPrincipalName": "ann@contoso.com", "privileged": false}'
        ) from None
