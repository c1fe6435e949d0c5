"""Kernel-enforced limits of a tenant session: memory, CPU time and tasks, by cgroup v1.

Root creates, for each session slot of a tenant principal with limits, one cgroup in
each controller the limits need:

    <cgroup_root>/<controller>/<cgroup_name>/<principal>/slot<n>

writes the limits there, and hands only `cgroup.procs` and `tasks` to the tenant's unix
user (`nixwarden tenant create`, `nixwarden tenant limits apply` at boot). The gate,
running as that user, checks the cgroup is root's and holds the policy's limits, then
moves itself in before it execs the sandbox: everything the session starts is counted
and limited by the kernel, and the user cannot change a limit (the limit files and the
directories are root's). Moving a process between cgroups under cgroup v1 needs only
write access to the destination's `cgroup.procs` and the same uid as the process moved.

cgroup v2 (a systemd host) is detected and refused: there, moving a process needs write
access to `cgroup.procs` of the common ancestor of its old and new cgroup, which an SSH
session's process lacks. A principal whose limits cannot be enforced is refused unless
its policy says `limits = "best-effort"`.

Imported by the gate only for a principal with limits: nothing heavy at import.
"""

from __future__ import annotations

import contextlib
import os
import stat

from nixwarden.tenants.host import TenantSetupError

TYPE_CHECKING = False  # not typing's: on the gate's start-up path for limited principals
if TYPE_CHECKING:
    from nixwarden.config import Principal, TenantSettings

CGROUP_V1 = "cgroup v1"
CGROUP_V2 = "cgroup v2"
NO_MECHANISM = "none"

CFS_PERIOD_US = 100_000
PAGE = 4096
# Files root hands to the tenant's user in each slot: how processes are moved in.
HANDED_OVER = ("cgroup.procs", "tasks")
# A control file is a few bytes; anything longer is not the kernel's.
MAX_CONTROL_BYTES = 64


def has_kernel_limits(principal: Principal) -> bool:
    return principal.memory is not None or principal.cpu is not None or principal.tasks is not None


def limit_files(principal: Principal) -> dict[str, list[tuple[str, str]]]:
    """controller -> [(file, value)] in the order root writes them. cpuacct carries no
    limit: it counts the CPU time the cap allows (for `tenant list` and the tests)."""
    wanted: dict[str, list[tuple[str, str]]] = {}
    if principal.memory is not None:
        wanted["memory"] = [("memory.limit_in_bytes", str(principal.memory))]
    if principal.tasks is not None:
        wanted["pids"] = [("pids.max", str(principal.tasks))]
    if principal.cpu is not None:
        quota = max(1000, round(principal.cpu * CFS_PERIOD_US))
        wanted["cpu"] = [
            ("cpu.cfs_period_us", str(CFS_PERIOD_US)),
            ("cpu.cfs_quota_us", str(quota)),
        ]
        wanted["cpuacct"] = []
    return wanted


def detect(cgroup_root: str, controllers: tuple[str, ...] = ("memory", "pids", "cpu")) -> str:
    """Which mechanism this host offers for `controllers`: CGROUP_V1 when each is a v1
    hierarchy at <cgroup_root>/<controller>, CGROUP_V2 when <cgroup_root> is a cgroup2
    mount (its root has cgroup.controllers), else NO_MECHANISM."""
    if os.path.exists(os.path.join(cgroup_root, "cgroup.controllers")):
        return CGROUP_V2
    for controller in controllers:
        if not os.path.exists(os.path.join(cgroup_root, controller, "cgroup.procs")):
            return NO_MECHANISM
    return CGROUP_V1


def unenforceable(settings: TenantSettings, principal: Principal) -> str | None:
    """Why the principal's limits cannot be enforced on this host, or None."""
    if not has_kernel_limits(principal):
        return None
    controllers = tuple(limit_files(principal))
    match detect(settings.cgroup_root, controllers):
        case "cgroup v1":
            return None
        case "cgroup v2":
            return (
                f"{settings.cgroup_root} is cgroup v2, where nixwarden does not place "
                "sessions yet (memory, cpu and tasks limits are enforced with cgroup v1 only)"
            )
        case _:
            return (
                f"no cgroup v1 hierarchy of {', '.join(controllers)} under {settings.cgroup_root}"
            )


def unenforced(settings: TenantSettings, principal: Principal) -> str | None:
    """Why some of the principal's limits, the disk quota included, are not held by the
    kernel while a session runs (for `audit` and `builder status`), or None."""
    reasons = []
    why = unenforceable(settings, principal)
    if why is not None:
        reasons.append(why)
    if principal.disk_quota is not None and not settings.disk_images:
        reasons.append(
            "disk_quota is not held by the kernel: without [tenants] disk_images the gate "
            "measures the usage every 5 s and ends a session past it, which may overshoot"
        )
    return "; ".join(reasons) or None


def host_mechanism(settings: TenantSettings) -> str:
    """What this host offers, in one line (`builder status`)."""
    match detect(settings.cgroup_root):
        case "cgroup v1":
            cgroups = f"cgroup v1 at {settings.cgroup_root}: memory, cpu and tasks limits enforced"
        case "cgroup v2":
            cgroups = (
                f"cgroup v2 at {settings.cgroup_root}: not supported, principals with "
                "memory, cpu or tasks limits are refused (unless best effort)"
            )
        case _:
            cgroups = (
                f"no cgroup v1 hierarchies at {settings.cgroup_root}: principals with "
                "memory, cpu or tasks limits are refused (unless best effort)"
            )
    disk = (
        f"disk quotas held by ext4 images in {settings.disk_images}"
        if settings.disk_images
        else "disk quotas measured every 5 s by the gate ([tenants] disk_images unset)"
    )
    return f"{cgroups}; {disk}"


def describe(principal: Principal) -> str:
    """The principal's limits, as `builder status` lists them ("-" for none)."""
    parts = []
    if principal.memory is not None:
        parts.append(f"memory {size_text(principal.memory)}")
    if principal.cpu is not None:
        parts.append(f"cpu {principal.cpu:g}")
    if principal.tasks is not None:
        parts.append(f"tasks {principal.tasks}")
    if principal.disk_quota is not None:
        parts.append(f"disk {size_text(principal.disk_quota)}")
    if parts and principal.limits != "enforce":
        parts.append(principal.limits)
    return ", ".join(parts) or "-"


def slot_path(settings: TenantSettings, controller: str, principal: str, slot: int) -> str:
    return os.path.join(
        settings.cgroup_root, controller, settings.cgroup_name, principal, f"slot{slot}"
    )


# --- root: creating the slots --------------------------------------------------------------


def apply(settings: TenantSettings, principal: Principal, uid: int, gid: int) -> list[str]:
    """As root: every slot cgroup of `principal`, its limits written, its cgroup.procs and
    tasks the user's. Returns the directories. Raises TenantSetupError when the host has
    no mechanism and the policy enforces."""
    why = unenforceable(settings, principal)
    if why is not None:
        if principal.limits == "enforce":
            raise TenantSetupError(f"the limits of {principal.name} cannot be enforced: {why}")
        return []
    made: list[str] = []
    for controller, files in limit_files(principal).items():
        for slot in range(principal.max_sessions):
            path = slot_path(settings, controller, principal.name, slot)
            os.makedirs(path, mode=0o755, exist_ok=True)
            _write_limits(path, controller, files)
            for name in HANDED_OVER:
                os.chown(os.path.join(path, name), uid, gid, follow_symlinks=False)
            made.append(path)
    return made


def _write_limits(path: str, controller: str, files: list[tuple[str, str]]) -> None:
    if controller == "memory":
        # memsw (memory + swap) must stay ≥ the memory limit: lift it, set both, equal, so
        # swap cannot stretch the limit (where swap accounting exists).
        memsw = os.path.join(path, "memory.memsw.limit_in_bytes")
        has_memsw = os.path.exists(memsw)
        if has_memsw:
            _write(memsw, "-1")
        for name, value in files:
            _write(os.path.join(path, name), value)
        if has_memsw:
            _write(memsw, files[0][1])
        return
    for name, value in files:
        _write(os.path.join(path, name), value)


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def remove(settings: TenantSettings, name: str) -> None:
    """As root: the principal's slot cgroups, when no process is left in them."""
    for controller in ("memory", "pids", "cpu", "cpuacct"):
        tenant = os.path.join(settings.cgroup_root, controller, settings.cgroup_name, name)
        try:
            slots = os.listdir(tenant)
        except OSError:
            continue
        for entry in [*(os.path.join(tenant, e) for e in slots if e.startswith("slot")), tenant]:
            with contextlib.suppress(OSError):  # a cgroup with processes left is busy: kept
                os.rmdir(entry)


# --- the gate: entering a slot ---------------------------------------------------------------


def enter(settings: TenantSettings, principal: Principal, slot: int) -> None:
    """In the gate, as the tenant's user: check slot `slot`'s cgroups are root's and hold
    the policy's limits, then move this process into each. Every problem is the host's
    set-up: TenantSetupError with the command that fixes it."""
    fix = f"as root: nixwarden tenant limits apply {principal.name}"
    targets: list[str] = []
    for controller, files in limit_files(principal).items():
        path = slot_path(settings, controller, principal.name, slot)
        try:
            info = os.stat(path)
        except OSError:
            raise TenantSetupError(
                f"session slot {slot} of {principal.name} has no {controller} cgroup; {fix}"
            ) from None
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o022:
            raise TenantSetupError(f"{path} is not a directory only root may write; {fix}")
        for name, value in files:
            actual = _read(os.path.join(path, name), principal.name, fix)
            if not _same_limit(name, actual, value):
                raise TenantSetupError(f"{path}/{name} is {actual}, the policy says {value}; {fix}")
        targets.append(os.path.join(path, "cgroup.procs"))
    pid = str(os.getpid()).encode()
    for target in targets:
        try:
            fd = os.open(target, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)
        except OSError as error:
            raise TenantSetupError(f"cannot enter {target}: {error.strerror}; {fix}") from None


def _read(path: str, name: str, fix: str) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            info = os.fstat(fd)
            if info.st_uid != 0 or info.st_mode & 0o022:
                raise TenantSetupError(f"{path} may be written by others than root; {fix}")
            data = os.read(fd, MAX_CONTROL_BYTES)
        finally:
            os.close(fd)
    except OSError as error:
        raise TenantSetupError(f"cannot read {path}: {error.strerror}; {fix}") from None
    return data.decode("ascii", "replace").strip()


def _same_limit(name: str, actual: str, wanted: str) -> bool:
    if name == "memory.limit_in_bytes" and actual.isdigit():
        # The kernel rounds the memory limit down to whole pages.
        return int(actual) == int(wanted) // PAGE * PAGE
    return actual == wanted


def counters(
    settings: TenantSettings, principal: Principal, slot: int
) -> list[tuple[str, str, str]]:
    """(kind, file, the limit as people read it) of each counter that grows when slot
    `slot` hits one of the principal's limits (gate.supervisor watches them). CPU has
    none: at its cap a session waits, nothing fails."""
    found = []
    if principal.memory is not None:
        path = os.path.join(
            slot_path(settings, "memory", principal.name, slot), "memory.oom_control"
        )
        found.append(("memory", path, size_text(principal.memory)))
    if principal.tasks is not None:
        path = os.path.join(slot_path(settings, "pids", principal.name, slot), "pids.events")
        found.append(("tasks", path, str(principal.tasks)))
    return found


def size_text(count: int) -> str:
    """Bytes as a limit is usually written: 128 MiB, 8 GiB, 1.5 GiB."""
    for shift, unit in ((40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")):
        if count >= 1 << shift:
            value = count / (1 << shift)
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{count} B"


def usage(settings: TenantSettings, principal: str, slot: int) -> dict[str, int]:
    """What slot `slot` has used, from the kernel's counters (for tests and status)."""
    counters = {
        "memory_failcnt": ("memory", "memory.failcnt"),
        "memory_max_bytes": ("memory", "memory.max_usage_in_bytes"),
        "pids_events_max": ("pids", "pids.events"),
        "cpu_ns": ("cpuacct", "cpuacct.usage"),
    }
    found: dict[str, int] = {}
    for key, (controller, name) in counters.items():
        path = os.path.join(slot_path(settings, controller, principal, slot), name)
        try:
            with open(path, encoding="ascii") as file:
                text = file.read(MAX_CONTROL_BYTES).split()
        except OSError:
            continue
        if text:
            found[key] = int(text[-1])
    return found
