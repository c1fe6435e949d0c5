"""The deploy wire protocol, version 1: frames and messages, pure and strict.

A frame is a big-endian `u32 type`, a `u32 length` and `length` bytes of payload. Every
payload but NAR_DATA's is a UTF-8 JSON object with exactly the documented keys; NAR_DATA
carries at most 1 MiB of raw NAR bytes. Both ends of a push read what the other sends, so
both ends parse strictly: an unknown type, a length over its bound (checked before a byte
of the payload is read), bad UTF-8 or JSON, a missing, unknown or repeated key, a value of
the wrong type or out of bounds, a repeated path, a path outside the store — each is a
`WireError` (a `FormatError`) with one line saying what and where. The reader then stops;
what to do about it (log, close, change nothing) is the caller's business.

    1 HELLO      c→s {"version", "principal" (or null: the session's), "action", "profile", "tops"}
    2 WELCOME    s→c {"version", "store_dir", "host"}
    3 WANT       c→s {"paths"}                 the client's whole closure
    4 MISSING    s→c {"paths"}                 those not valid on the target
    5 MANIFEST   c→s {"paths": [{"path", "narHash", "narSize", "references", "deriver",
                                 "ca", "signatures"}], "certificates": [base64]}
    6 VERDICT    s→c {"accepted", "failures": [{"path", "reason"}]}
    7 NAR_START  c→s {"path"}
    8 NAR_DATA   c→s raw bytes
    9 NAR_END    c→s {}
   10 COMMIT     c→s {}
   11 RESULT     s→c {"status", "reason", "generation", "paths", "bytes"}
   12 ERROR      s→c {"reason", "kind"}
   13 RELAY      gate→s {"principal", "ssh_keys", "client"}   first, on every connection

JSON nesting: the deepest message (MANIFEST) nests three levels; anything deeper is a
value of the wrong type, and `json`'s own recursion guard stops absurd nesting before it
costs more than the (bounded) payload. Time is bounded by the caller's idle timeout.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import re
import struct
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from nixwarden.config import PRINCIPAL_NAME, PROFILE_NAME
from nixwarden.display import escape
from nixwarden.errors import FormatError
from nixwarden.nix.storepath import STORE_DIR, StorePath
from nixwarden.trust.hashes import Hash, HashAlgorithm

if TYPE_CHECKING:
    from nixwarden.trust.keys import Signature

VERSION = 1
PROTOCOL_ARGUMENT = str(VERSION)  # `nixwarden-receive --protocol 1`

HEADER = struct.Struct(">II")
MAX_CONTROL_PAYLOAD = 16 << 20
MAX_NAR_CHUNK = 1 << 20
MAX_PATHS = 1_000_000
MAX_REFERENCES = 100_000
MAX_SIGNATURES = 64
MAX_CERTIFICATES = 1024
MAX_CERTIFICATE_SIZE = 16 << 10
MAX_STRING = 4 << 10
MAX_SSH_KEYS = 64
MAX_SIZE = (1 << 63) - 1

_CA = re.compile(r"(fixed:(r:)?|text:)(.+)")
_E = TypeVar("_E", bound=enum.Enum)


class WireError(FormatError):
    """Bytes that are not a valid message of protocol version 1; one line, escaped."""


class MessageType(enum.IntEnum):
    HELLO = 1
    WELCOME = 2
    WANT = 3
    MISSING = 4
    MANIFEST = 5
    VERDICT = 6
    NAR_START = 7
    NAR_DATA = 8
    NAR_END = 9
    COMMIT = 10
    RESULT = 11
    ERROR = 12
    RELAY = 13


class Action(enum.Enum):
    PUSH = "push"
    PLAN = "plan"
    ROLLBACK = "rollback"


class Status(enum.Enum):
    DEPLOYED = "deployed"
    UP_TO_DATE = "up-to-date"
    PLANNED = "planned"
    REFUSED = "refused"
    FAILED = "failed"


class ErrorKind(enum.Enum):
    REFUSED = "refused"
    FAILED = "failed"
    PROTOCOL = "protocol"


# --- messages ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Hello:
    TYPE: ClassVar[MessageType] = MessageType.HELLO
    # None: whichever principal the session is (the client rarely knows the target's
    # principal names; its SSH key decides). A name must match the session's.
    principal: str | None
    action: Action
    profile: str | None
    tops: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "version": VERSION,
            "principal": self.principal,
            "action": self.action.value,
            "profile": self.profile,
            "tops": list(self.tops),
        }


@dataclass(frozen=True)
class Welcome:
    TYPE: ClassVar[MessageType] = MessageType.WELCOME
    store_dir: str
    host: str

    def to_json(self) -> dict[str, object]:
        return {"version": VERSION, "store_dir": self.store_dir, "host": self.host}


@dataclass(frozen=True)
class Want:
    TYPE: ClassVar[MessageType] = MessageType.WANT
    paths: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {"paths": list(self.paths)}


@dataclass(frozen=True)
class Missing:
    TYPE: ClassVar[MessageType] = MessageType.MISSING
    paths: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {"paths": list(self.paths)}


@dataclass(frozen=True)
class PathInfo:
    """What a narinfo says of one path: enough to verify it before its NAR is sent."""

    path: str
    nar_hash: Hash
    nar_size: int
    references: tuple[str, ...]
    deriver: str | None
    ca: str | None
    signatures: tuple[Signature, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "narHash": self.nar_hash.to_nix32(),
            "narSize": self.nar_size,
            "references": list(self.references),
            "deriver": self.deriver,
            "ca": self.ca,
            "signatures": [signature.render() for signature in self.signatures],
        }


def references_first(infos: Iterable[PathInfo]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The paths of `infos` so that each comes after those of `infos` it refers to
    (Kahn's algorithm), and those left out because they are part of a reference cycle.

    The client sends a manifest in this order, so the receive service can import each
    path's references before it while later NARs still arrive."""
    infos = tuple(infos)
    present = {info.path for info in infos}
    waiting_on: dict[str, int] = {}
    referrers: dict[str, list[str]] = {}
    for info in infos:
        inside = {ref for ref in info.references if ref in present and ref != info.path}
        waiting_on[info.path] = len(inside)
        for reference in inside:
            referrers.setdefault(reference, []).append(info.path)
    ready = [info.path for info in reversed(infos) if waiting_on[info.path] == 0]
    order: list[str] = []
    while ready:
        path = ready.pop()
        order.append(path)
        for referrer in referrers.get(path, ()):
            waiting_on[referrer] -= 1
            if waiting_on[referrer] == 0:
                ready.append(referrer)
    stuck = tuple(sorted(path for path, count in waiting_on.items() if count > 0))
    return tuple(order), stuck


@dataclass(frozen=True)
class Manifest:
    TYPE: ClassVar[MessageType] = MessageType.MANIFEST
    paths: tuple[PathInfo, ...]
    certificates: tuple[bytes, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "paths": [info.to_json() for info in self.paths],
            "certificates": [base64.b64encode(blob).decode() for blob in self.certificates],
        }


@dataclass(frozen=True)
class Failure:
    path: str
    reason: str

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "reason": self.reason}


@dataclass(frozen=True)
class Verdict:
    TYPE: ClassVar[MessageType] = MessageType.VERDICT
    accepted: bool
    failures: tuple[Failure, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {"accepted": self.accepted, "failures": [f.to_json() for f in self.failures]}


@dataclass(frozen=True)
class NarStart:
    TYPE: ClassVar[MessageType] = MessageType.NAR_START
    path: str

    def to_json(self) -> dict[str, object]:
        return {"path": self.path}


@dataclass(frozen=True)
class NarData:
    TYPE: ClassVar[MessageType] = MessageType.NAR_DATA
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class NarEnd:
    TYPE: ClassVar[MessageType] = MessageType.NAR_END

    def to_json(self) -> dict[str, object]:
        return {}


@dataclass(frozen=True)
class Commit:
    TYPE: ClassVar[MessageType] = MessageType.COMMIT

    def to_json(self) -> dict[str, object]:
        return {}


@dataclass(frozen=True)
class Result:
    TYPE: ClassVar[MessageType] = MessageType.RESULT
    status: Status
    reason: str | None = None
    generation: int | None = None
    paths: int = 0
    bytes: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "status": self.status.value,
            "reason": self.reason,
            "generation": self.generation,
            "paths": self.paths,
            "bytes": self.bytes,
        }


@dataclass(frozen=True)
class Error:
    TYPE: ClassVar[MessageType] = MessageType.ERROR
    reason: str
    kind: ErrorKind

    def to_json(self) -> dict[str, object]:
        return {"reason": self.reason, "kind": self.kind.value}


@dataclass(frozen=True)
class Relay:
    """What the gate tells the service about the SSH session, before the client's bytes.

    The principal is checked by the service against the connecting uid (SO_PEERCRED);
    the key fingerprints and the client address are what the session reported.
    """

    TYPE: ClassVar[MessageType] = MessageType.RELAY
    principal: str
    ssh_keys: tuple[str, ...] = ()
    client: str | None = None

    def to_json(self) -> dict[str, object]:
        return {"principal": self.principal, "ssh_keys": list(self.ssh_keys), "client": self.client}


Message = (
    Hello
    | Welcome
    | Want
    | Missing
    | Manifest
    | Verdict
    | NarStart
    | NarData
    | NarEnd
    | Commit
    | Result
    | Error
    | Relay
)


_M = TypeVar("_M", bound=Message)


# --- encoding ---------------------------------------------------------------------------


def frame_header(kind: MessageType, length: int) -> bytes:
    return HEADER.pack(kind, length)


def encode(message: Message) -> bytes:
    """One whole frame. NAR chunks over 1 MiB and control payloads over 16 MiB are refused
    here too, so a sender cannot produce what the receiver must reject."""
    if isinstance(message, NarData):
        payload = message.data
    else:
        text = json.dumps(message.to_json(), ensure_ascii=False, separators=(",", ":"))
        payload = text.encode("utf-8")
    if len(payload) > _limit(message.TYPE):
        raise WireError(
            f"wire: {message.TYPE.name} payload of {len(payload)} bytes is over "
            f"the {_limit(message.TYPE)} allowed"
        )
    return frame_header(message.TYPE, len(payload)) + payload


def _limit(kind: MessageType) -> int:
    return MAX_NAR_CHUNK if kind is MessageType.NAR_DATA else MAX_CONTROL_PAYLOAD


# --- decoding ---------------------------------------------------------------------------


class Readable(Protocol):
    def readinto(self, buffer: memoryview, /) -> int | None: ...


def parse_header(header: bytes) -> tuple[MessageType, int]:
    """The type and payload length of an 8-byte header, refused before the payload is read."""
    kind_number, length = HEADER.unpack(header)
    try:
        kind = MessageType(kind_number)
    except ValueError:
        raise WireError(f"wire: unknown message type {kind_number}") from None
    if length > _limit(kind):
        raise WireError(
            f"wire: {kind.name} payload of {length} bytes is over the {_limit(kind)} allowed"
        )
    return kind, length


def read_message(stream: Readable, *, store_dir: str = STORE_DIR) -> Message | None:
    """The next message, or None at a clean end of stream (between frames).

    An end of stream inside a frame is a truncation and a `WireError`.
    """
    header = _read_exactly(stream, HEADER.size, allow_eof=True)
    if header is None:
        return None
    kind, length = parse_header(header)
    payload = _read_exactly(stream, length, allow_eof=False) if length else b""
    assert payload is not None
    return decode(kind, payload, store_dir=store_dir)


def decode_all(data: bytes, *, store_dir: str = STORE_DIR) -> list[Message]:
    """Every message in `data`, which must end at a frame boundary."""
    messages = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < HEADER.size:
            raise WireError("wire: truncated frame header")
        kind, length = parse_header(data[offset : offset + HEADER.size])
        offset += HEADER.size
        if len(data) - offset < length:
            raise WireError(f"wire: truncated {kind.name} payload")
        messages.append(decode(kind, data[offset : offset + length], store_dir=store_dir))
        offset += length
    return messages


def _read_exactly(stream: Readable, size: int, *, allow_eof: bool) -> bytes | None:
    # Up to a NAR chunk, read into this thread's reused buffer and copy out once: a fresh
    # 1 MiB buffer per frame costs a page fault per 4 KiB (more CPU than the copy).
    scratch = _scratch()
    buffer = scratch if size <= len(scratch) else bytearray(size)
    view = memoryview(buffer)[:size]
    got = 0
    while got < size:
        count = stream.readinto(view[got:])
        if not count:
            if got == 0 and allow_eof:
                return None
            what = "frame header" if allow_eof else "payload"
            raise WireError(f"wire: truncated {what} ({got} of {size} bytes)")
        got += count
    return bytes(view)


_THREAD = threading.local()


def _scratch() -> bytearray:
    try:
        buffer: bytearray = _THREAD.buffer
    except AttributeError:
        buffer = _THREAD.buffer = bytearray(MAX_NAR_CHUNK)
    return buffer


def decode(kind: MessageType, payload: bytes, *, store_dir: str = STORE_DIR) -> Message:
    """The message of one frame; `WireError` naming the message and the field."""
    if len(payload) > _limit(kind):
        raise WireError(f"wire: {kind.name} payload of {len(payload)} bytes is over the limit")
    if kind is MessageType.NAR_DATA:
        if not payload:
            # An empty chunk carries nothing and would let a peer stall without end.
            raise WireError("wire: NAR_DATA: empty chunk")
        return NarData(bytes(payload))
    fields = _Fields(kind.name, _json_object(kind.name, payload), store_dir)
    message = _DECODERS[kind](fields)
    fields.done()
    return message


def _json_object(what: str, payload: bytes) -> dict[str, Any]:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as error:
        raise WireError(f"wire: {what}: payload is not UTF-8 (byte {error.start})") from None
    try:
        value = json.loads(
            text,
            object_pairs_hook=_no_repeated_keys,
            parse_constant=_constant,
            parse_int=_integer,
        )
    except _RepeatedKey as error:
        raise WireError(f"wire: {what}: key {_shown(error.key)} is repeated") from None
    except RecursionError:
        raise WireError(f"wire: {what}: JSON nests too deep") from None
    except ValueError as error:
        raise WireError(f"wire: {what}: not JSON ({_first_line(error)})") from None
    if not isinstance(value, dict):
        raise WireError(f"wire: {what}: payload is not a JSON object")
    return value


class _RepeatedKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _RepeatedKey(key)
        result[key] = value
    return result


def _constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


def _integer(text: str) -> int:
    # Every bound in the protocol fits in 19 digits; more is an attack on int() itself.
    if len(text.lstrip("-")) > 20:
        raise ValueError(f"an integer of {len(text)} digits")
    return int(text)


def _first_line(error: Exception) -> str:
    return escape(str(error).splitlines()[0] if str(error) else type(error).__name__)[:200]


def _shown(text: str) -> str:
    return repr(escape(text if len(text) <= 80 else text[:77] + "..."))


class _Fields:
    """Typed, bounded access to one message's JSON object; `done` refuses unknown keys."""

    def __init__(self, message: str, document: Mapping[str, Any], store_dir: str) -> None:
        self.message = message
        self.document = document
        self.store_dir = store_dir
        self.used: set[str] = set()

    def fail(self, where: str, problem: str) -> WireError:
        return WireError(f"wire: {self.message}: {where}: {problem}")

    def get(self, key: str) -> Any:
        if key not in self.document:
            raise WireError(f"wire: {self.message}: required key {_shown(key)} is missing")
        self.used.add(key)
        return self.document[key]

    def done(self) -> None:
        for key in self.document:
            if key not in self.used:
                raise WireError(f"wire: {self.message}: unknown key {_shown(key)}")

    def nested(self, where: str, value: Any, keys: tuple[str, ...]) -> _Fields:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected an object, got {_kind(value)}")
        inner = _Fields(f"{self.message}: {where}", value, self.store_dir)
        for key in value:
            if key not in keys:
                raise inner.fail(_shown(key), "unknown key")
        return inner

    # values

    def version(self) -> None:
        value = self.get("version")
        if type(value) is not int:
            raise self.fail("version", f"expected an integer, got {_kind(value)}")
        if value != VERSION:
            raise self.fail("version", f"unsupported protocol version {value}")

    def text(self, where: str, value: Any, *, limit: int = MAX_STRING, empty: bool = False) -> str:
        if type(value) is not str:
            raise self.fail(where, f"expected a string, got {_kind(value)}")
        if len(value) > limit:
            raise self.fail(where, f"string of {len(value)} characters is over the {limit}")
        if not value and not empty:
            raise self.fail(where, "empty string")
        if "\0" in value:
            raise self.fail(where, "string contains NUL")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise self.fail(where, "string is not valid Unicode (a lone surrogate)") from None
        return value

    def optional_text(self, where: str, value: Any) -> str | None:
        return None if value is None else self.text(where, value)

    def name(self, where: str, value: Any, pattern: re.Pattern[str], what: str) -> str:
        text = self.text(where, value)
        if not pattern.fullmatch(text):
            raise self.fail(where, f"{_shown(text)} is not a valid {what} name")
        return text

    def integer(self, where: str, value: Any, minimum: int, maximum: int = MAX_SIZE) -> int:
        if type(value) is not int:
            raise self.fail(where, f"expected an integer, got {_kind(value)}")
        if not minimum <= value <= maximum:
            raise self.fail(where, f"{value} is not from {minimum} to {maximum}")
        return value

    def boolean(self, where: str, value: Any) -> bool:
        if type(value) is not bool:
            raise self.fail(where, f"expected true or false, got {_kind(value)}")
        return value

    def choice(self, where: str, value: Any, choices: type[_E]) -> _E:
        text = self.text(where, value)
        try:
            return choices(text)
        except ValueError:
            allowed = ", ".join(repr(c.value) for c in choices)
            raise self.fail(where, f"{_shown(text)} is not one of {allowed}") from None

    def array(self, where: str, value: Any, limit: int) -> list[Any]:
        if type(value) is not list:
            raise self.fail(where, f"expected an array, got {_kind(value)}")
        if len(value) > limit:
            raise self.fail(where, f"{len(value)} entries is over the {limit} allowed")
        return value

    def store_path(self, where: str, value: Any) -> str:
        text = self.text(where, value)
        try:
            StorePath.parse(text, self.store_dir)
        except FormatError as error:
            raise self.fail(where, str(error)) from None
        return text

    def store_paths(self, where: str, value: Any, limit: int = MAX_PATHS) -> tuple[str, ...]:
        items = self.array(where, value, limit)
        paths = tuple(self.store_path(f"{where}[{i}]", item) for i, item in enumerate(items))
        _no_duplicates(self, where, paths)
        return paths


def _no_duplicates(fields: _Fields, where: str, items: Iterable[str]) -> None:
    seen: set[str] = set()
    for item in items:
        if item in seen:
            raise fields.fail(where, f"{_shown(item)} is listed twice")
        seen.add(item)


def _kind(value: object) -> str:
    match value:
        case None:
            return "null"
        case bool():
            return "a boolean"
        case int():
            return "an integer"
        case float():
            return "a number"
        case str():
            return "a string"
        case list():
            return "an array"
        case dict():
            return "an object"
        case _:
            return type(value).__name__


def _hello(fields: _Fields) -> Hello:
    fields.version()
    raw_principal = fields.get("principal")
    principal = None
    if raw_principal is not None:
        principal = fields.name("principal", raw_principal, PRINCIPAL_NAME, "principal")
    action = fields.choice("action", fields.get("action"), Action)
    raw_profile = fields.get("profile")
    profile = (
        None
        if raw_profile is None
        else fields.name("profile", raw_profile, PROFILE_NAME, "profile")
    )
    tops = fields.store_paths("tops", fields.get("tops"))
    match action:
        case Action.ROLLBACK:
            if profile is None:
                raise fields.fail("profile", "a rollback needs a profile")
            if tops:
                raise fields.fail("tops", "a rollback sends no paths")
        case Action.PUSH | Action.PLAN:
            if not tops:
                raise fields.fail("tops", f"a {action.value} needs at least one path")
    return Hello(principal, action, profile, tops)


def _welcome(fields: _Fields) -> Welcome:
    fields.version()
    store_dir = fields.text("store_dir", fields.get("store_dir"))
    parts = store_dir.split("/")
    if parts[0] or store_dir == "/" or {"", ".", ".."} & set(parts[1:]):
        raise fields.fail("store_dir", f"{_shown(store_dir)} is not a canonical absolute path")
    host = fields.text("host", fields.get("host"), limit=255)
    return Welcome(store_dir, host)


def _want(fields: _Fields) -> Want:
    paths = fields.store_paths("paths", fields.get("paths"))
    if not paths:
        raise fields.fail("paths", "no paths")
    return Want(paths)


def _missing(fields: _Fields) -> Missing:
    return Missing(fields.store_paths("paths", fields.get("paths")))


_PATH_INFO_KEYS = ("path", "narHash", "narSize", "references", "deriver", "ca", "signatures")


def _path_info(fields: _Fields, where: str, value: Any) -> PathInfo:
    entry = fields.nested(where, value, _PATH_INFO_KEYS)
    path = entry.store_path("path", entry.get("path"))
    hash_text = entry.text("narHash", entry.get("narHash"), limit=200)
    try:
        nar_hash = Hash.parse(hash_text)
    except FormatError as error:
        raise entry.fail("narHash", str(error)) from None
    if nar_hash.algorithm is not HashAlgorithm.SHA256:
        raise entry.fail("narHash", "must be sha256")
    nar_size = entry.integer("narSize", entry.get("narSize"), 1)
    references = entry.store_paths("references", entry.get("references"), MAX_REFERENCES)
    raw_deriver = entry.get("deriver")
    deriver = None if raw_deriver is None else entry.store_path("deriver", raw_deriver)
    ca = entry.optional_text("ca", entry.get("ca"))
    if ca is not None:
        _check_ca(entry, ca)
    # Imported here: it loads `cryptography`, which the gate's relay and a push with
    # nothing to send never need.
    from nixwarden.trust.keys import Signature  # noqa: PLC0415

    raw_signatures = entry.array("signatures", entry.get("signatures"), MAX_SIGNATURES)
    signatures = []
    for index, item in enumerate(raw_signatures):
        text = entry.text(f"signatures[{index}]", item, limit=1024)
        try:
            signatures.append(Signature.parse(text))
        except FormatError as error:
            raise entry.fail(f"signatures[{index}]", str(error)) from None
    _no_duplicates(entry, "signatures", (s.render() for s in signatures))
    entry.done()
    return PathInfo(path, nar_hash, nar_size, references, deriver, ca, tuple(signatures))


def _check_ca(fields: _Fields, text: str) -> None:
    match = _CA.fullmatch(text)
    if match is None:
        raise fields.fail("ca", "malformed content address (expected fixed:… or text:…)")
    try:
        Hash.parse(match.group(3))
    except FormatError as error:
        raise fields.fail("ca", str(error)) from None


def _manifest(fields: _Fields) -> Manifest:
    items = fields.array("paths", fields.get("paths"), MAX_PATHS)
    infos = tuple(_path_info(fields, f"paths[{i}]", item) for i, item in enumerate(items))
    _no_duplicates(fields, "paths", (info.path for info in infos))
    raw_certificates = fields.array("certificates", fields.get("certificates"), MAX_CERTIFICATES)
    certificates = []
    encoded_limit = (MAX_CERTIFICATE_SIZE + 2) // 3 * 4
    for index, item in enumerate(raw_certificates):
        where = f"certificates[{index}]"
        text = fields.text(where, item, limit=encoded_limit)
        try:
            blob = base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise fields.fail(where, "not base64") from None
        if len(blob) > MAX_CERTIFICATE_SIZE:
            raise fields.fail(where, f"certificate over {MAX_CERTIFICATE_SIZE} bytes")
        certificates.append(blob)
    return Manifest(infos, tuple(certificates))


def _verdict(fields: _Fields) -> Verdict:
    accepted = fields.boolean("accepted", fields.get("accepted"))
    items = fields.array("failures", fields.get("failures"), MAX_PATHS)
    failures = []
    for index, item in enumerate(items):
        where = f"failures[{index}]"
        entry = fields.nested(where, item, ("path", "reason"))
        path = entry.text("path", entry.get("path"))
        reason = entry.text("reason", entry.get("reason"))
        entry.done()
        failures.append(Failure(path, reason))
    if accepted and failures:
        raise fields.fail("failures", "an accepted push has no failures")
    if not accepted and not failures:
        raise fields.fail("failures", "a refusal names at least one failure")
    return Verdict(accepted, tuple(failures))


def _nar_start(fields: _Fields) -> NarStart:
    return NarStart(fields.store_path("path", fields.get("path")))


def _nar_end(fields: _Fields) -> NarEnd:
    return NarEnd()


def _commit(fields: _Fields) -> Commit:
    return Commit()


def _result(fields: _Fields) -> Result:
    status = fields.choice("status", fields.get("status"), Status)
    reason = fields.optional_text("reason", fields.get("reason"))
    raw_generation = fields.get("generation")
    generation = None if raw_generation is None else fields.integer("generation", raw_generation, 0)
    paths = fields.integer("paths", fields.get("paths"), 0, MAX_PATHS)
    size = fields.integer("bytes", fields.get("bytes"), 0)
    return Result(status, reason, generation, paths, size)


def _error(fields: _Fields) -> Error:
    reason = fields.text("reason", fields.get("reason"))
    kind = fields.choice("kind", fields.get("kind"), ErrorKind)
    return Error(reason, kind)


def _relay(fields: _Fields) -> Relay:
    principal = fields.name("principal", fields.get("principal"), PRINCIPAL_NAME, "principal")
    items = fields.array("ssh_keys", fields.get("ssh_keys"), MAX_SSH_KEYS)
    keys = tuple(fields.text(f"ssh_keys[{i}]", item) for i, item in enumerate(items))
    client = fields.optional_text("client", fields.get("client"))
    return Relay(principal, keys, client)


_DECODERS: dict[MessageType, Callable[[_Fields], Message]] = {
    MessageType.HELLO: _hello,
    MessageType.WELCOME: _welcome,
    MessageType.WANT: _want,
    MessageType.MISSING: _missing,
    MessageType.MANIFEST: _manifest,
    MessageType.VERDICT: _verdict,
    MessageType.NAR_START: _nar_start,
    MessageType.NAR_END: _nar_end,
    MessageType.COMMIT: _commit,
    MessageType.RESULT: _result,
    MessageType.ERROR: _error,
    MessageType.RELAY: _relay,
}


def expect(message: Message | None, *kinds: type[_M]) -> _M:
    """`message` if it is one of `kinds`; otherwise a `WireError` naming what came instead."""
    if isinstance(message, kinds):
        return message
    wanted = " or ".join(kind.TYPE.name for kind in kinds)
    got = "the end of the stream" if message is None else message.TYPE.name
    raise WireError(f"wire: expected {wanted}, got {got}")
