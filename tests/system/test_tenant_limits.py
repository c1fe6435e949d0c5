"""Tenant limits held by the kernel (cgroup v1), through the real gate, with real builds.

Each test's cgroups are under a name of its own (`[tenants] cgroup_name`), and the
fixture kills what is left in them and removes them: the tests' own safety net, besides
each hostile build's own bound (a fork bomb of at most 200 sleeps of 15 s).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed import harness
from testbed.gate_setup import ClientStore, GatedBuilder, Principal, client_store
from tests.system.test_tenants import add_tenant, last_reason, remote_build, script_expression

CGROUP_ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "pids", "cpu", "cpuacct")


def _has_cgroup_v1() -> bool:
    return all((CGROUP_ROOT / c / "cgroup.procs").exists() for c in CONTROLLERS)


pytestmark = pytest.mark.skipif(
    not _has_cgroup_v1() and not os.environ.get("NIXWARDEN_REQUIRE_SYSTEM"),
    reason="needs cgroup v1 memory, pids, cpu and cpuacct hierarchies",
)


@pytest.fixture
def limited(tenant_builder: GatedBuilder) -> Iterator[GatedBuilder]:
    name = f"nwt-{secrets.token_hex(4)}"
    tenant_builder.tenants["cgroup_name"] = name
    tenant_builder.write_config()
    try:
        yield tenant_builder
    finally:
        for controller in CONTROLLERS:
            _remove_tree(CGROUP_ROOT / controller / name)


def _remove_tree(top: Path) -> None:
    if not top.exists():
        return
    for directory, _subdirectories, files in sorted(os.walk(top), reverse=True):
        if "cgroup.procs" in files:
            for pid in (Path(directory) / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        for _attempt in range(50):
            try:
                os.rmdir(directory)
                break
            except OSError:
                threading.Event().wait(0.1)


def slot_counter(builder: GatedBuilder, principal: str, controller: str, name: str) -> int:
    """The sum of a counter over the principal's slots (the session took one of them)."""
    base = CGROUP_ROOT / controller / str(builder.tenants["cgroup_name"]) / principal
    total = 0
    for slot in base.glob("slot*"):
        text = (slot / name).read_text().split()
        total += int(text[-1])
    return total


def oom_kills(builder: GatedBuilder, principal: str) -> int:
    base = CGROUP_ROOT / "memory" / str(builder.tenants["cgroup_name"]) / principal
    total = 0
    for slot in base.glob("slot*"):
        for line in (slot / "memory.oom_control").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                total += int(value)
    return total


def limit_reasons(builder: GatedBuilder, principal: str, *, at_least: int = 0) -> list[str]:
    """The reasons of the audit log's "limit" lines for `principal`, once there are
    `at_least` of them (the client may have gone before the gate logged: up to 20 s)."""
    reasons: list[str] = []
    for _attempt in range(200):
        reasons = [
            str(entry["reason"])
            for entry in map(json.loads, builder.log_lines())
            if entry["decision"] == "limit" and entry["principal"] == principal
        ]
        if len(reasons) >= at_least:
            break
        threading.Event().wait(0.1)
    return reasons


def in_parallel(*jobs: tuple[str, object]) -> dict[str, subprocess.CompletedProcess[bytes]]:
    results: dict[str, subprocess.CompletedProcess[bytes]] = {}

    def run(key: str, job: object) -> None:
        results[key] = job()  # type: ignore[operator]

    threads = [threading.Thread(target=run, args=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return results


def test_memory_hog_is_killed_while_another_tenant_builds(
    limited: GatedBuilder, sshd: harness.Sshd
) -> None:
    hog = add_tenant(limited, "hog", memory="128M")
    other = add_tenant(limited, "neighbour")
    # dash keeps a command substitution's output in memory: 400 MB of it.
    hog_script = (
        "x=$(/usr/bin/head -c 400000000 /dev/zero | /usr/bin/tr '\\0' a); echo survived > $out"
    )
    tag = secrets.token_hex(4)
    other_script = f"/usr/bin/sleep 3; echo neighbour {tag} > $out"

    def build(principal: Principal, script: str) -> object:
        def job() -> subprocess.CompletedProcess[bytes]:
            with client_store(sshd) as client:
                return remote_build(limited, client, principal, script)

        return job

    results = in_parallel(("hog", build(hog, hog_script)), ("other", build(other, other_script)))
    assert results["hog"].returncode != 0
    assert b"signal 9" in results["hog"].stderr or b"Killed" in results["hog"].stderr, results[
        "hog"
    ].stderr.decode()[-2000:]
    assert oom_kills(limited, "hog") >= 1
    # The gate, supervising the session, logs why (and, below, tells the client).
    assert limit_reasons(limited, "hog", at_least=1) == [
        "session of principal hog hit its memory limit (128 MiB): the kernel killed a process of it"
    ]
    peak = slot_counter(limited, "hog", "memory", "memory.max_usage_in_bytes")
    assert peak <= 128 << 20
    assert results["other"].returncode == 0, results["other"].stderr.decode()[-2000:]
    assert limit_reasons(limited, "neighbour") == []
    # With --store ssh-ng:// Nix prints the remote's stderr as it comes: the gate's line,
    # when the session still runs as the gate reads the counter (here the hog is a part of
    # the build that the kernel kills, and the build goes on a while). (With --builders,
    # Nix 2.8's build hook does not show the remote's stderr: the audit log has it.)
    partial = f"( {hog_script} ); /usr/bin/sleep 2; exit 1"
    with client_store(sshd) as client:
        direct = client.run(
            "nix-build", "--no-out-link", "--store", f"ssh-ng://{hog.alias}",
            "-E", script_expression(partial), check=False,
        )  # fmt: skip
    assert direct.returncode != 0
    assert (
        b"\nnixwarden: session of principal hog hit its memory limit (128 MiB): "
        b"the kernel killed a process of it\n" in direct.stderr
    ), direct.stderr.decode()[-2000:]
    assert len(limit_reasons(limited, "hog", at_least=2)) == 2


def test_fork_bomb_is_contained_and_another_tenant_still_starts(
    limited: GatedBuilder, client: ClientStore
) -> None:
    bomb = add_tenant(limited, "bomb", tasks=64)
    other = add_tenant(limited, "bystander")
    # At most 200 sleeps of 15 s: the test's own bound, whatever the limit does.
    script = (
        "i=0; while [ $i -lt 200 ]; do /usr/bin/sleep 15 & i=$((i+1)); done; wait; echo no > $out"
    )
    ping = ["nix", "store", "ping", "--store", f"ssh-ng://{other.alias}"]
    env = limited.sshd.client_env()

    def bystander() -> subprocess.CompletedProcess[bytes]:
        threading.Event().wait(4)  # while the bomb holds its tasks
        return harness.run(ping, env=env, check=False)

    results = in_parallel(
        ("bomb", lambda: remote_build(limited, client, bomb, script)), ("other", bystander)
    )
    assert results["bomb"].returncode != 0
    assert slot_counter(limited, "bomb", "pids", "pids.events") >= 1  # forks refused at max
    assert limit_reasons(limited, "bomb", at_least=1) == [
        "session of principal bomb hit its tasks limit (64): a new process or thread was refused"
    ]
    assert results["other"].returncode == 0, results["other"].stderr.decode()[-2000:]


def test_cpu_half_a_core_over_ten_seconds(limited: GatedBuilder, client: ClientStore) -> None:
    principal = add_tenant(limited, "spinner", cpu=0.5)
    # Two busy loops for ten seconds: up to 20 s of CPU on two cores without the cap.
    script = (
        "(while :; do :; done) & a=$!; (while :; do :; done) & b=$!; "
        "/usr/bin/sleep 10; kill $a $b; echo spun > $out"
    )
    result = remote_build(limited, client, principal, script)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert limit_reasons(limited, "spinner") == []  # at its cap a session waits: no line
    used = slot_counter(limited, "spinner", "cpuacct", "cpuacct.usage") / 1e9
    print(f"cpu = 0.5: {used:.2f} s of CPU over the 10 s build and its session")
    # Half a core over ten seconds, plus the session's own start and end (less on a busy
    # machine: the cap is a ceiling, not a share).
    assert 1.0 <= used <= 6.5
    # The loops ran under the bandwidth cap: CFS counted periods of this cgroup's quota.
    base = CGROUP_ROOT / "cpu" / str(limited.tenants["cgroup_name"]) / "spinner"
    periods = sum(
        int(line.split()[1])
        for slot in base.glob("slot*")
        for line in (slot / "cpu.stat").read_text().splitlines()
        if line.startswith("nr_periods ")
    )
    assert periods >= 50


def test_a_host_without_a_mechanism_refuses_limits(limited: GatedBuilder, tmp_path: Path) -> None:
    limited.tenants["cgroup_root"] = str(tmp_path)  # no hierarchy there: no mechanism
    principal = add_tenant(limited, "capped", memory="1G", create_tenant=False)
    create = harness.run(
        [harness.NIXWARDEN, "tenant", "create", "capped", "--user", principal.user.name,
         "--config", str(limited.config)],
        check=False,
    )  # fmt: skip
    assert create.returncode == 1
    assert b"cannot be enforced on this host: no cgroup v1" in create.stderr
    assert not (Path(str(limited.tenants["root"])) / "capped").exists()
    # Created as best effort, then the policy enforces: the gate refuses, with the reason.
    limited.policies["capped"]["limits"] = "best-effort"
    limited.write_config()
    limited.create_tenant("capped", principal.user.name)
    limited.policies["capped"]["limits"] = "enforce"
    limited.write_config()
    ping = ["nix", "store", "ping", "--store", f"ssh-ng://{principal.alias}"]
    refused = harness.run(ping, env=limited.sshd.client_env(), check=False)
    assert refused.returncode != 0
    assert "cannot be enforced on this host" in last_reason(limited)
    limited.policies["capped"]["limits"] = "best-effort"
    limited.write_config()
    harness.run(ping, env=limited.sshd.client_env())
