"""Tenant stores through a real sshd, real Nix on both ends, the SSH user not trusted.

The host daemon (the harness's) keeps `require-sigs = true` and trusts only root and
the nixwarden-trusted group; tenant users are in neither, nor in nix-users.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import subprocess
import threading
import time
from pathlib import Path

import pytest

from testbed import harness
from testbed.gate_setup import ClientStore, GatedBuilder, Principal, chain_expression, client_store

SYSTEM = f"{platform.machine()}-linux"


def nix_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${") + '"'


def add_tenant(builder: GatedBuilder, name: str, **policy: object) -> Principal:
    policy.setdefault("protocols", ["ssh-ng", "ssh"])
    policy.setdefault("write", True)
    # No nix-users, no trusted group: a tenant never talks to the host daemon.
    return builder.add(name, groups=(), store="tenant", **policy)


def tenant_store(builder: GatedBuilder, name: str) -> Path:
    return Path(str(builder.tenants["root"])) / name / "nix" / "store"


def build_remotely(
    client: ClientStore, url: str, expression: str, *, local_first: bool = True
) -> subprocess.CompletedProcess[bytes]:
    if local_first:
        # Build the input on the client, so it exists only there and must be copied over.
        dep = expression.split(" in ", 1)[0].removeprefix("let dep = ").rstrip(";")
        client.run("nix-build", "--no-out-link", "-E", dep)
    return client.run(
        "nix-build", "--no-out-link", "--max-jobs", "0",
        "--builders", f"{url} {SYSTEM} - 1 1", "-E", expression,
        check=False,
    )  # fmt: skip


@pytest.mark.parametrize("scheme", ["ssh-ng", "ssh"])
def test_untrusted_remote_build_lands_in_the_tenant_store(
    tenant_builder: GatedBuilder, client: ClientStore, scheme: str
) -> None:
    principal = add_tenant(tenant_builder, f"tenant-{scheme.replace('-', '')}")
    groups = subprocess.run(["id", "-Gn", principal.user.name], capture_output=True, check=True)
    assert b"nix-users" not in groups.stdout and harness.TRUSTED_GROUP.encode() not in groups.stdout
    tag = secrets.token_hex(6)
    result = build_remotely(client, f"{scheme}://{principal.alias}", chain_expression(tag))
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    out = result.stdout.decode().strip()
    name = out.removeprefix("/nix/store/")
    # Back on the client, built in the tenant store, and nowhere in the host store.
    assert (client.root / "store" / name).read_text() == f"top on dep {tag}\n"
    store = tenant_store(tenant_builder, principal.name)
    assert (store / name).read_text() == f"top on dep {tag}\n"
    assert any(p.name.endswith(f"nwt-dep-{tag}") for p in store.iterdir())
    assert not Path(out).exists()
    host = harness.run(["nix-store", "--check-validity", out], check=False)
    assert host.returncode != 0
    host_paths = os.listdir("/nix/store")
    assert not any(tag in entry for entry in host_paths)
    # The tenant's files belong to its unix user, nobody else can read them.
    assert (store.parent.parent).stat().st_uid == principal.user.uid
    assert (store.parent.parent).stat().st_mode & 0o077 == 0


def test_host_principal_is_not_privileged(builder: GatedBuilder, client: ClientStore) -> None:
    """Why tenants exist: an untrusted user cannot build input-addressed derivations."""
    principal = builder.add("hostonly", store="host")
    tag = secrets.token_hex(6)
    result = build_remotely(client, f"ssh-ng://{principal.alias}", chain_expression(tag))
    assert result.returncode != 0
    stderr = result.stderr.decode()
    assert (
        "you are not privileged to build input-addressed derivations" in stderr
        or "lacks a valid signature" in stderr
    ), stderr[-2000:]


PROBE = r"""
probe() { if sh -c "$2" >/dev/null 2>&1; then echo "$1=reached"; else echo "$1=blocked"; fi; }
probe other_tenant_store "ls @OTHER@"
probe host_store_path "test -e @HOSTPATH@"
probe host_db "grep -q @HOSTHASH@ /nix/var/nix/db/db.sqlite"
probe shadow "cat /etc/shadow"
probe root_home "cat @ROOTSECRET@"
probe sshd_host_key "cat /etc/ssh/ssh_host_ed25519_key"
probe harness_host_key "cat @SSHDKEY@"
probe write_host_store "touch /nix/store/@EVIL@ && test -e @HOSTPATH@"
probe signal_outside "kill -0 @HOSTPID@"
probe tenants_root "ls @TENANTS@"
echo done
"""


def test_tenant_build_cannot_reach_outside(
    tenant_builder: GatedBuilder, client: ClientStore, tmp_path: Path
) -> None:
    other = add_tenant(tenant_builder, "neighbour")
    nosy = add_tenant(tenant_builder, "nosy")
    # The neighbour's store exists and holds something.
    tag = secrets.token_hex(6)
    assert build_remotely(client, f"ssh-ng://{other.alias}", chain_expression(tag)).returncode == 0
    host_path = harness.run(["nix-store", "--add", str(_host_file(tmp_path, tag))])
    host_path_text = host_path.stdout.decode().strip()
    root_secret = Path(f"/root/nwt-secret-{tag}")
    root_secret.write_text("secret\n")
    root_secret.chmod(0o644)  # readable by anyone who can reach it: the sandbox must hide it
    evil = f"nwt-evil-{tag}"
    # A process of the tenant's own unix user, outside the sandbox: only the pid
    # namespace keeps the build from signalling it.
    outside = subprocess.Popen(
        ["setpriv", f"--reuid={nosy.user.uid}", f"--regid={nosy.user.gid}", "--clear-groups",
         "sleep", "300"],
    )  # fmt: skip
    try:
        script = (
            PROBE.replace("@OTHER@", str(tenant_store(tenant_builder, other.name)))
            .replace("@HOSTPATH@", host_path_text)
            .replace("@HOSTHASH@", host_path_text.removeprefix("/nix/store/")[:32])
            .replace("@ROOTSECRET@", str(root_secret))
            .replace("@SSHDKEY@", str(tenant_builder.sshd.directory / "ssh_host_ed25519_key"))
            .replace("@EVIL@", evil)
            .replace("@HOSTPID@", str(outside.pid))
            .replace("@TENANTS@", str(tenant_builder.tenants["root"]))
        )
        expression = (
            f'derivation {{ name = "nwt-probe-{tag}"; system = "{SYSTEM}"; '
            f'builder = "/bin/sh"; args = [ "-c" {nix_string("{ " + script + "} > $out")} ]; }}'
        )
        result = client.run(
            "nix-build", "--no-out-link", "--max-jobs", "0",
            "--builders", f"ssh-ng://{nosy.alias} {SYSTEM} - 1 1", "-E", expression,
        )  # fmt: skip
        report = Path(client.root / "store" / result.stdout.decode().strip()[11:]).read_text()
        # Control: the same probe as the same user, outside the sandbox, does see what
        # only the sandbox hides, so "blocked" above is the sandbox's doing.
        control = harness.run(
            ["setpriv", f"--reuid={nosy.user.uid}", f"--regid={nosy.user.gid}",
             "--clear-groups", "sh", "-c", script.replace(f"/nix/store/{evil}", "/nonexistent/x")],
        ).stdout.decode()  # fmt: skip
    finally:
        outside.kill()
        root_secret.unlink()
    unsandboxed = dict(line.split("=", 1) for line in control.splitlines() if "=" in line)
    for leak in ("host_store_path", "host_db", "signal_outside"):
        assert unsandboxed[leak] == "reached", control
    lines = dict(line.split("=", 1) for line in report.splitlines() if "=" in line)
    assert "done" in report
    assert set(lines) == {
        "other_tenant_store", "host_store_path", "host_db", "shadow", "root_home",
        "sshd_host_key", "harness_host_key", "write_host_store", "signal_outside", "tenants_root",
    }  # fmt: skip
    assert lines == dict.fromkeys(lines, "blocked"), report
    assert not Path("/nix/store", evil).exists()


def _host_file(tmp_path: Path, tag: str) -> Path:
    path = tmp_path / f"nwt-host-only-{tag}"
    path.write_text(f"host only {tag}\n")
    return path


def test_two_tenants_build_the_same_derivation_at_once(
    tenant_builder: GatedBuilder, sshd: harness.Sshd
) -> None:
    first = add_tenant(tenant_builder, "twin-a")
    second = add_tenant(tenant_builder, "twin-b")
    tag = secrets.token_hex(6)
    expression = (
        f'derivation {{ name = "nwt-twin-{tag}"; system = "{SYSTEM}"; builder = "/bin/sh"; '
        f'args = [ "-c" "sleep 2; echo twin {tag} > $out" ]; }}'
    )
    results: dict[str, subprocess.CompletedProcess[bytes]] = {}

    def build(principal: Principal) -> None:
        with client_store(sshd) as client:
            results[principal.name] = build_remotely(
                client, f"ssh-ng://{principal.alias}", expression, local_first=False
            )

    threads = [threading.Thread(target=build, args=(p,)) for p in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    outs = set()
    for principal in (first, second):
        result = results[principal.name]
        assert result.returncode == 0, result.stderr.decode()[-2000:]
        out = result.stdout.decode().strip()
        outs.add(out)
        stored = tenant_store(tenant_builder, principal.name) / out.removeprefix("/nix/store/")
        assert stored.read_text() == f"twin {tag}\n"
    assert len(outs) == 1


def test_over_quota_is_refused(tenant_builder: GatedBuilder, client: ClientStore) -> None:
    principal = add_tenant(tenant_builder, "frugal", disk_quota="16M")
    env = tenant_builder.sshd.client_env()
    ping = ["nix", "store", "ping", "--store", f"ssh-ng://{principal.alias}"]
    harness.run(ping, env=env)
    tag = secrets.token_hex(6)
    path = client.add_text(f"nwt-big-{tag}", "x" * (20 << 20))
    client.run("nix", "copy", "--to", f"ssh-ng://{principal.alias}", path)
    refused = harness.run(ping, env=env, check=False)
    assert refused.returncode != 0
    assert b"over its disk quota" in refused.stderr
    assert b"nixwarden tenant gc frugal" in refused.stderr


def script_expression(script: str) -> str:
    """A derivation whose builder is /bin/sh -c `script` (named anew each time)."""
    return (
        f'derivation {{ name = "nwt-script-{secrets.token_hex(4)}"; system = "{SYSTEM}"; '
        f'builder = "/bin/sh"; args = [ "-c" {nix_string(script)} ]; }}'
    )


def remote_build(
    builder: GatedBuilder, client: ClientStore, principal: Principal, script: str
) -> subprocess.CompletedProcess[bytes]:
    expression = script_expression(script)
    return client.run(
        "nix-build", "--no-out-link", "--max-jobs", "0",
        "--builders", f"ssh-ng://{principal.alias} {SYSTEM} - 1 1", "-E", expression,
        check=False,
    )  # fmt: skip


def test_quota_counts_what_a_build_leaves_outside_the_store(
    tenant_builder: GatedBuilder, client: ClientStore
) -> None:
    """A failed build that writes under /nix, outside the store, still counts."""
    principal = add_tenant(tenant_builder, "hoarder", disk_quota="16M")
    junk = "PATH=/usr/bin:/bin; head -c 20971520 /dev/zero > /nix/var/hoard; exit 1"
    failed = remote_build(tenant_builder, client, principal, junk)
    assert failed.returncode != 0
    base = Path(str(tenant_builder.tenants["root"])) / "hoarder"
    assert (base / "nix" / "var" / "hoard").stat().st_size == 20 << 20
    ping = ["nix", "store", "ping", "--store", f"ssh-ng://{principal.alias}"]
    refused = harness.run(ping, env=tenant_builder.sshd.client_env(), check=False)
    assert b"over its disk quota" in refused.stderr, refused.stderr


def test_tmp_is_cleaned_between_sessions(tenant_builder: GatedBuilder, client: ClientStore) -> None:
    principal = add_tenant(tenant_builder, "litter", disk_quota="16M")
    # Left in /tmp by a build: big (over the quota), read-only, nested: all cleaned.
    litter = (
        "PATH=/usr/bin:/bin; mkdir -p /tmp/left/deep/er && "
        "head -c 20971520 /dev/zero > /tmp/left/deep/big && "
        "ln -s /etc/passwd /tmp/left/link && chmod 0500 /tmp/left/deep/er /tmp/left/deep && "
        "echo built > $out"
    )
    assert remote_build(tenant_builder, client, principal, litter).returncode == 0
    tmp = Path(str(tenant_builder.tenants["root"])) / "litter" / "tmp"
    ping = ["nix", "store", "ping", "--store", f"ssh-ng://{principal.alias}"]
    harness.run(ping, env=tenant_builder.sshd.client_env())  # under quota once cleaned
    assert list(tmp.iterdir()) == []
    assert Path("/etc/passwd").exists()


def open_session(builder: GatedBuilder, principal: Principal) -> subprocess.Popen[bytes]:
    """An idle `nix-daemon --stdio` session, held open until the caller kills it."""
    return subprocess.Popen(
        builder.sshd.ssh_argv(principal.alias, "nix-daemon", "--stdio"),
        env=harness.base_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_max_sessions_and_session_time_limit(tenant_builder: GatedBuilder) -> None:
    principal = add_tenant(tenant_builder, "brief", max_sessions=1, session_timeout=3)
    started = time.monotonic()
    first = open_session(tenant_builder, principal)
    try:
        harness.wait_for(lambda: len(tenant_builder.log_lines()) == 1, "the first session")
        second = tenant_builder.ssh(principal, "nix-daemon", "--stdio", input=b"")
        assert second.returncode == 1
        assert b"all 1 sessions are in use" in second.stderr
        # The idle first session is ended by its time limit (3 s, plus the kill grace).
        first.wait(timeout=30)
    finally:
        first.kill()
    assert time.monotonic() - started < 25
    third = tenant_builder.ssh(principal, "nix-daemon", "--stdio", input=b"")
    assert b"sessions are in use" not in third.stderr


def test_tenant_list_gc_remove(tenant_builder: GatedBuilder, client: ClientStore) -> None:
    principal = add_tenant(tenant_builder, "tidy")
    tag = secrets.token_hex(6)
    path = client.add_text(f"nwt-garbage-{tag}", f"garbage {tag}\n")
    client.run("nix", "copy", "--to", f"ssh-ng://{principal.alias}", path)
    store = tenant_store(tenant_builder, "tidy")
    assert (store / path.removeprefix("/nix/store/")).exists()
    config = ["--config", str(tenant_builder.config)]
    listing = harness.run([harness.NIXWARDEN, "tenant", *config, "list"]).stdout.decode()
    (row,) = [line for line in listing.splitlines() if line.startswith("tidy ")]
    assert principal.user.name in row and " 1 " in row
    gc = harness.run([harness.NIXWARDEN, "tenant", *config, "gc", "tidy"]).stdout.decode()
    assert "deleted" in gc
    assert not (store / path.removeprefix("/nix/store/")).exists()
    # Files the gc wrote still belong to the tenant's user, so its next session works.
    db_dir = store.parent / "var" / "nix" / "db"
    assert {entry.stat().st_uid for entry in db_dir.iterdir()} == {principal.user.uid}
    harness.run(
        ["nix", "store", "ping", "--store", f"ssh-ng://{principal.alias}"],
        env=tenant_builder.sshd.client_env(),
    )
    removed = harness.run([harness.NIXWARDEN, "tenant", *config, "remove", "tidy"])
    assert b"removed" in removed.stdout
    assert not store.parent.parent.exists()
    unknown = harness.run([harness.NIXWARDEN, "tenant", *config, "gc", "nobody"], check=False)
    assert unknown.returncode == 2


def test_tenant_decisions_are_logged_with_the_sandbox(tenant_builder: GatedBuilder) -> None:
    principal = add_tenant(tenant_builder, "logged")
    harness.run(
        ["nix", "store", "ping", "--store", f"ssh-ng://{principal.alias}"],
        env=tenant_builder.sshd.client_env(),
    )
    (line,) = tenant_builder.log_lines()
    argv = json.loads(line)["exec"]
    assert "/usr/bin/bwrap" in argv and "--unshare-net" in argv
    assert argv[argv.index("--bind") + 2] == "/nix"
    assert argv[-2:] == ["/usr/bin/nix-daemon", "--stdio"]


WRAPPERS = r"""
PATH=/usr/bin:/bin
mkdir -p $out/bin
for p in nix-store nix-daemon; do
  printf '#!/bin/sh\nexec %s/bin/%s "$@"\n' "$real" "$p" > $out/bin/$p
  chmod 0555 $out/bin/$p
done
"""


def nix_in_the_host_store(tag: str) -> Path:
    """A NixOS layout built here: Nix's programs in a host store path whose wrappers call
    the real binary in a second store path they refer to, so the programs work only where
    the whole closure of the first is visible."""
    real = (
        f'derivation {{ name = "nwt-nix-real-{tag}"; system = "{SYSTEM}"; builder = "/bin/sh"; '
        'args = [ "-c" "PATH=/usr/bin:/bin; mkdir -p $out/bin && cp /usr/bin/nix $out/bin/nix && '
        'ln -s nix $out/bin/nix-store && ln -s nix $out/bin/nix-daemon" ]; }'
    )
    wrappers = (
        f"let real = {real}; in "
        f'derivation {{ name = "nwt-nix-{tag}"; system = "{SYSTEM}"; builder = "/bin/sh"; '
        f"inherit real; args = [ (builtins.toFile \"wrap.sh\" ''{WRAPPERS}'') ]; }}"
    )
    built = harness.run(["nix-build", "--no-out-link", "-E", wrappers], env=harness.base_env())
    return Path(built.stdout.decode().strip())


def test_nixos_layout_nix_in_the_host_store(
    tenant_builder: GatedBuilder, client: ClientStore
) -> None:
    """Sessions and `tenant gc` bind the closure of a Nix that lives in the host store."""
    nix = nix_in_the_host_store(secrets.token_hex(4))
    wrapper = (nix / "bin" / "nix-daemon").read_text()
    assert wrapper.startswith("#!/bin/sh\nexec /nix/store/") and wrapper.endswith(' "$@"\n')
    tenant_builder.gate["nix_daemon"] = str(nix / "bin" / "nix-daemon")
    tenant_builder.gate["nix_store"] = str(nix / "bin" / "nix-store")
    # As on NixOS, where every user may reach the daemon (allowed-users = *): the gate, as
    # the tenant's user, asks it for the closure when it cannot read the database itself.
    principal = tenant_builder.add(
        "nixos", groups=(harness.NIX_USERS_GROUP,), store="tenant", protocols=["ssh-ng"]
    )
    tag = secrets.token_hex(6)
    result = build_remotely(client, f"ssh-ng://{principal.alias}", chain_expression(tag))
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    (line,) = [json.loads(entry) for entry in tenant_builder.log_lines()][-1:]
    closure = harness.run(["nix-store", "--query", "--requisites", str(nix)]).stdout.split()
    assert len(closure) == 2
    for path in closure:  # the wrappers and the real Nix they call, both bound read-only
        index = line["exec"].index(path.decode())
        assert line["exec"][index - 1 : index + 2] == ["--ro-bind", path.decode(), path.decode()]
    config = ["--config", str(tenant_builder.config)]
    gc = harness.run([harness.NIXWARDEN, "tenant", *config, "gc", "nixos"])
    assert b"deleted" in gc.stdout, gc.stderr
    assert not any(tag in entry.name for entry in tenant_store(tenant_builder, "nixos").iterdir())
    # And the next session still works after the gc.
    again = build_remotely(client, f"ssh-ng://{principal.alias}", chain_expression(tag + "b"))
    assert again.returncode == 0, again.stderr.decode()[-3000:]


def last_reason(builder: GatedBuilder) -> str:
    """Why the gate decided as it did last, from the audit log (the client sees less)."""
    return str(json.loads(builder.log_lines()[-1])["reason"])


def test_tenant_directories_are_made_by_root_and_refused_otherwise(
    tenant_builder: GatedBuilder, users: harness.Users
) -> None:
    config = ["--config", str(tenant_builder.config)]
    env = tenant_builder.sshd.client_env()
    late = tenant_builder.add("late", groups=(), store="tenant", create_tenant=False)
    ping = ["nix", "store", "ping", "--store", f"ssh-ng://{late.alias}"]
    refused = harness.run(ping, env=env, check=False)
    fix = f"as root: nixwarden tenant create late --user {late.user.name} {' '.join(config)}"
    assert refused.returncode != 0 and last_reason(tenant_builder).endswith(fix)
    # The client learns only that the server is at fault: no path, no account.
    assert b"server-side error" in refused.stderr, refused.stderr
    assert str(tenant_builder.tenants["root"]).encode() not in refused.stderr
    harness.run([harness.NIXWARDEN, "tenant", "create", "late", "--user", late.user.name, *config])
    assert harness.run(ping, env=env, check=False).returncode == 0
    # Created again for its own user: nothing to do; for another: refused.
    again = [harness.NIXWARDEN, "tenant", "create", "late", *config, "--user"]
    assert b"exists and belongs to" in harness.run([*again, late.user.name]).stdout
    other = users.create(groups=())
    wrong = harness.run([*again, other.name], check=False)
    assert wrong.returncode == 1 and b"owned by uid" in wrong.stderr
    # A directory someone else made (in a root that once let them): refused by the gate.
    squatter = tenant_builder.add("squat", groups=(), store="tenant", create_tenant=False)
    squat = Path(str(tenant_builder.tenants["root"])) / "squat"
    squat.mkdir(mode=0o700)
    os.chown(squat, other.uid, other.gid)
    denied = harness.run(
        ["nix", "store", "ping", "--store", f"ssh-ng://{squatter.alias}"], env=env, check=False
    )
    assert denied.returncode != 0
    reason = last_reason(tenant_builder)
    assert "is not a directory of this unix user's" in reason, reason
    assert "nixwarden tenant remove squat" in reason


def test_a_tenants_root_others_may_write_is_refused(
    tenant_builder: GatedBuilder, tenants_root: Path
) -> None:
    principal = add_tenant(tenant_builder, "legacy")
    tenants_root.chmod(0o1733)  # what the docs once said
    refused = harness.run(
        ["nix", "store", "ping", "--store", f"ssh-ng://{principal.alias}"],
        env=tenant_builder.sshd.client_env(),
        check=False,
    )
    assert refused.returncode != 0
    fix = f"as root: chown root:root {tenants_root} && chmod 0711 {tenants_root}"
    assert last_reason(tenant_builder).endswith(fix)


def test_remove_holds_the_session_lock(tenant_builder: GatedBuilder) -> None:
    principal = add_tenant(tenant_builder, "busy", max_sessions=2)
    config = ["--config", str(tenant_builder.config)]
    session = open_session(tenant_builder, principal)
    try:
        harness.wait_for(lambda: len(tenant_builder.log_lines()) == 1, "the session")
        busy = harness.run([harness.NIXWARDEN, "tenant", "remove", "busy", *config], check=False)
        assert busy.returncode == 1 and b"has sessions running" in busy.stderr
        assert (Path(str(tenant_builder.tenants["root"])) / "busy" / "nix").is_dir()
    finally:
        session.kill()
        session.wait()
    harness.wait_for(
        lambda: (
            harness.run(
                [harness.NIXWARDEN, "tenant", "remove", "busy", *config], check=False
            ).returncode
            == 0
        ),
        "the session to end and the removal to succeed",
    )
    assert not (Path(str(tenant_builder.tenants["root"])) / "busy").exists()
