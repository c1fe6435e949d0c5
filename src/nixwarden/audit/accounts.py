"""/etc/passwd and /etc/group, parsed from bytes: who exists and who is in which group."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property


@dataclass(frozen=True)
class UserEntry:
    name: str
    uid: int
    gid: int
    home: str
    shell: str


@dataclass(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


def _lines(data: bytes) -> list[list[str]]:
    rows = []
    # Lines end at \n only, as getpwent reads them (str.splitlines would also split at
    # \x0b, \x1c, \x85, \u2028…, and see entries the system does not).
    for raw in data.decode("utf-8", "replace").split("\n"):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        rows.append(raw.split(":"))
    return rows


def parse_passwd(data: bytes) -> dict[str, UserEntry]:
    """name → entry; malformed lines are skipped (as getpwnam would not find them either)."""
    users: dict[str, UserEntry] = {}
    for fields in _lines(data):
        if len(fields) < 7 or not fields[0]:
            continue
        try:
            uid, gid = int(fields[2]), int(fields[3])
        except ValueError:
            continue
        users.setdefault(fields[0], UserEntry(fields[0], uid, gid, fields[5], fields[6]))
    return users


def parse_group(data: bytes) -> dict[str, GroupEntry]:
    groups: dict[str, GroupEntry] = {}
    for fields in _lines(data):
        if len(fields) < 4 or not fields[0]:
            continue
        try:
            gid = int(fields[2])
        except ValueError:
            continue
        members = tuple(m for m in fields[3].split(",") if m)
        groups.setdefault(fields[0], GroupEntry(fields[0], gid, members))
    return groups


@dataclass
class _Index:
    user_name: dict[int, str] = field(default_factory=dict)
    group_name: dict[int, str] = field(default_factory=dict)
    users_of_gid: dict[int, list[str]] = field(default_factory=dict)
    groups_of_gid: dict[int, list[str]] = field(default_factory=dict)
    groups_of_member: dict[str, set[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Accounts:
    users: Mapping[str, UserEntry] = field(default_factory=dict)
    groups: Mapping[str, GroupEntry] = field(default_factory=dict)

    @classmethod
    def parse(cls, passwd: bytes, group: bytes) -> Accounts:
        return cls(parse_passwd(passwd), parse_group(group))

    @cached_property
    def _index(self) -> _Index:
        """Built once: the audit asks these for every user and every file it stats."""
        index = _Index()
        for group in self.groups.values():
            index.group_name.setdefault(group.gid, group.name)
            index.groups_of_gid.setdefault(group.gid, []).append(group.name)
            for member in group.members:
                index.groups_of_member.setdefault(member, set()).add(group.name)
        for user in self.users.values():
            index.user_name.setdefault(user.uid, user.name)
            index.users_of_gid.setdefault(user.gid, []).append(user.name)
        return index

    def group_members(self, name: str) -> tuple[str, ...] | None:
        """Explicit members and users whose primary group it is; None if no such group."""
        entry = self.groups.get(name)
        if entry is None:
            return None
        primary = self._index.users_of_gid.get(entry.gid, [])
        return tuple(sorted(set(entry.members) | set(primary)))

    def groups_of(self, user: str) -> tuple[str, ...]:
        entry = self.users.get(user)
        names = set(self._index.groups_of_member.get(user, ()))
        if entry is not None:
            names.update(self._index.groups_of_gid.get(entry.gid, ()))
        return tuple(sorted(names))

    def user_name(self, uid: int) -> str:
        return self._index.user_name.get(uid, str(uid))

    def group_name(self, gid: int) -> str:
        return self._index.group_name.get(gid, str(gid))
