"""Certificate validity windows, written as `ssh-keygen -V` takes them, and times shown.

The grammar is ssh-keygen's (`parse_cert_times`, `parse_absolute_time` and sshd's
`convtime`, OpenSSH 9.2), so an operator can give both tools the same SPEC:

- `+INTERVAL` alone: from the start of the current minute, less one (ssh-keygen
  backdates so that a clock a little behind still accepts it), to now + INTERVAL;
- `FROM:TO`, where FROM is `always`, `-INTERVAL`/`+INTERVAL` (relative to now), an
  absolute time or `0x` and hexadecimal seconds, and TO the same with `forever`
  instead of `always`.

INTERVAL is sshd's TIME FORMAT: one or more numbers, each with an optional unit
`s m h d w` (`90`, `8h`, `1h30m`, `52w1d`), at most 2^31-1 seconds in total.
Absolute times are `YYYYMMDD`, `YYYYMMDDHHMM` or `YYYYMMDDHHMMSS`; with a `Z` or
`UTC` suffix they are UTC, without one they are in the system time zone, as
ssh-keygen reads them (including its reading of them as standard time, never
daylight-saving time). A single absolute time without a colon is refused, as
ssh-keygen refuses it. Times are shown in UTC.
"""

from __future__ import annotations

import calendar
import datetime
import re
import time
from dataclasses import dataclass

from nixwarden.display import escape
from nixwarden.errors import InvalidInput

FOREVER = 2**64 - 1
INT_MAX = 2**31 - 1
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_INTERVAL_PART = re.compile(r"([0-9]{1,10})([smhdwSMHDW]?)")
_ABSOLUTE = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})(?:([0-9]{2})([0-9]{2})([0-9]{2})?)?")
_HEX = re.compile(r"0x[0-9a-fA-F]{1,16}")


@dataclass(frozen=True)
class Validity:
    """Seconds since the epoch: valid when `valid_after <= t < valid_before`."""

    valid_after: int
    valid_before: int

    @property
    def span(self) -> int:
        return self.valid_before - self.valid_after


def parse_interval(text: str) -> int:
    """sshd's TIME FORMAT (`convtime`): `90`, `8h`, `1h30m`, `52w1d` → seconds."""
    if not text:
        raise InvalidInput("an empty time interval")
    total = 0
    position = 0
    while position < len(text):
        match = _INTERVAL_PART.match(text, position)
        if match is None:
            raise InvalidInput(
                f"invalid time interval '{escape(text)}' (e.g. 90, 8h, 1h30m, 52w1d)"
            )
        seconds = int(match[1]) * _UNITS[match[2].lower()]
        total += seconds
        if total > INT_MAX:
            raise InvalidInput(f"time interval '{escape(text)}' is longer than {INT_MAX} seconds")
        position = match.end()
    return total


def _absolute(text: str) -> int | None:
    """ssh-keygen's `parse_absolute_time`, or None when `text` is not of that form."""
    utc = False
    body = text
    if len(body) > 1 and body[-1:].upper() == "Z":
        utc, body = True, body[:-1]
    elif len(body) > 3 and body[-3:].upper() == "UTC":
        utc, body = True, body[:-3]
    if len(body) not in (8, 12, 14):
        return None
    match = _ABSOLUTE.fullmatch(body)
    if match is None:
        return None
    year, month, day = int(match[1]), int(match[2]), int(match[3])
    hour, minute, second = (int(part) if part else 0 for part in match.groups()[3:])
    try:
        datetime.datetime(year, month, day, hour, minute, second)  # refuses 20260230
    except ValueError:
        return None
    fields = (year, month, day, hour, minute, second)
    if utc:
        seconds = calendar.timegm((*fields, 0, 0, 0))
    else:
        try:
            # tm_isdst = 0, as ssh-keygen's zeroed struct tm gives mktime.
            seconds = int(time.mktime((*fields, 0, 0, 0)))
        except (OverflowError, ValueError):
            return None
    return seconds if seconds >= 0 else None


def parse_time(text: str, now: int, *, end: bool) -> int:
    """One end of a `FROM:TO` spec: the start (`end=False`) or the end of the window."""
    if text[:1] in ("+", "-"):
        seconds = parse_interval(text[1:])
        if text[0] == "-":
            if seconds > now:
                raise InvalidInput(f"time '{escape(text)}' is before 1970")
            return now - seconds
        return now + seconds
    if text == ("forever" if end else "always"):
        return FOREVER if end else 0
    if text.startswith("0x"):
        if not _HEX.fullmatch(text):
            raise InvalidInput(f"invalid hexadecimal time '{escape(text)}'")
        return int(text, 16)
    absolute = _absolute(text)
    if absolute is None:
        which = "to" if end else "from"
        raise InvalidInput(
            f"invalid {which} time '{escape(text)}' (YYYYMMDD[HHMM[SS]][Z], "
            f"{'forever' if end else 'always'}, +/-INTERVAL or 0xSECONDS)"
        )
    return absolute


def parse_validity(spec: str, now: int) -> Validity:
    """An `ssh-keygen -V` SPEC at time `now` (seconds since the epoch)."""
    if spec.startswith("+") and ":" not in spec:
        return Validity(((now - 59) // 60) * 60, now + parse_interval(spec[1:]))
    start, colon, finish = spec.partition(":")
    if not colon or not start or not finish:
        raise InvalidInput(
            f"invalid validity '{escape(spec)}': expected +INTERVAL or FROM:TO "
            "(e.g. +8h, -1d:+52w, 20261201:20261231, always:forever), as ssh-keygen -V"
        )
    validity = Validity(parse_time(start, now, end=False), parse_time(finish, now, end=True))
    if validity.valid_before <= validity.valid_after:
        raise InvalidInput(f"validity '{escape(spec)}' is an empty interval")
    return validity


def parse_instant(text: str, now: int) -> int:
    """A point in time for `--at`: `now`, any end of a validity spec, or ISO 8601.

    ISO 8601 times without an offset are UTC (`2026-11-20T10:00`, `2026-11-20T10:00Z`,
    `2026-11-20T12:00+02:00`).
    """
    invalid = InvalidInput(
        f"invalid time '{escape(text)}' (now, 2026-11-20T10:00Z, 20261120Z, +1d, -2h, 0xSECONDS)"
    )
    if text == "now":
        return now
    if "-" in text[1:] or "T" in text:
        try:
            moment = datetime.datetime.fromisoformat(text)
        except ValueError:
            raise invalid from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        return int(moment.timestamp())
    if text in ("always", "forever"):
        raise invalid
    try:
        return parse_time(text, now, end=False)
    except InvalidInput:
        raise invalid from None


def format_time(seconds: int) -> str:
    """UTC, to the minute unless the seconds matter: `2026-11-20T10:00Z`."""
    if seconds == 0:
        return "always"
    if seconds == FOREVER:
        return "forever"
    try:
        moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    except (OverflowError, ValueError, OSError):
        return f"@{seconds}"
    pattern = "%Y-%m-%dT%H:%MZ" if moment.second == 0 else "%Y-%m-%dT%H:%M:%SZ"
    return moment.strftime(pattern)


def format_interval(seconds: int) -> str:
    """Seconds in sshd's TIME FORMAT, largest units first: `52w1d`, `8h`, `90s`."""
    if seconds <= 0:
        return "0s"
    parts = []
    for unit in ("w", "d", "h", "m", "s"):
        count, seconds = divmod(seconds, _UNITS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
