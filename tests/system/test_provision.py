"""A builder set up only by `builder init` and `enroll`, a client only by `client add-builder`:
real users, the testbed's sshd and nix-daemon, real remote builds over both protocols;
each command run twice changes nothing; the audit finds nothing to say about what they
set up; bad input is one line, exit 2, and nothing changed."""

from __future__ import annotations

import hashlib
import json
import platform
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from nixwarden.tenants import limits
from testbed import harness
from testbed.gate_setup import ClientStore, chain_expression, dep_expression
from testbed.provision_setup import ProvisionBed, provision_bed, same, tree_state, users_state

SYSTEM = f"{platform.machine()}-linux"


@pytest.fixture
def bed(nix_daemon: harness.NixDaemon) -> Iterator[ProvisionBed]:
    with provision_bed() as made:
        yield made


def fixed_output_expression(tag: str) -> str:
    """A fixed-output derivation: content-addressed, so the daemon builds it for an untrusted
    user (what a host-store principal can build on Nix 2.8)."""
    digest = hashlib.sha256(f"fixed {tag}\n".encode()).hexdigest()
    return (
        f'derivation {{ name = "nwt-fixed-{tag}"; system = "{SYSTEM}"; builder = "/bin/sh"; '
        f'args = [ "-c" "echo fixed {tag} > $out" ]; outputHashMode = "flat"; '
        f'outputHashAlgo = "sha256"; outputHash = "{digest}"; }}'
    )


def enroll(bed: ProvisionBed, *options: str) -> tuple[str, Path]:
    principal = bed.new_principal()
    identity = bed.sshd.client_key(principal)
    bed.builder(
        "enroll", "--principal", principal, "--key", str(identity.with_suffix(".pub")), *options
    )
    return principal, identity


def add_builder(bed: ProvisionBed, name: str, user: str, identity: Path, protocol: str) -> Path:
    """One machines file per builder, so a build can be sent to exactly that one."""
    machines = bed.client_root / f"machines-{name}"
    bed.client(
        "add-builder",
        *bed.add_builder_argv(name, user, identity, protocol),
        "--machines",
        str(machines),
    )
    return machines


def build(
    bed: ProvisionBed, client: ClientStore, machines: Path, expression: str, *, local: str = ""
) -> str:
    env = bed.client_ssh_env()
    if local:
        harness.run(client.argv("nix-build", "--no-out-link", "-E", local), env=env)
    result = harness.run(
        client.argv(
            "nix-build", "--no-out-link", "--max-jobs", "0", "--builders", f"@{machines}",
            "-E", expression,
        ),
        env=env,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    return result.stdout.decode().strip()


def test_init_enroll_and_remote_builds_over_both_protocols(
    bed: ProvisionBed, client: ClientStore
) -> None:
    bed.builder("init")
    tenant, tenant_key = enroll(bed, "--protocols", "ssh-ng,ssh", "--write")
    host, host_key = enroll(bed, "--store", "host")

    # The tenant: input-addressed builds, its input built on the client, over both protocols.
    for protocol in ("ssh-ng", "ssh"):
        machines = add_builder(bed, f"t-{protocol}", tenant, tenant_key, protocol)
        tag = secrets.token_hex(6)
        expression = chain_expression(tag)
        out = build(bed, client, machines, expression, local=dep_expression(expression))
        name = out.removeprefix("/nix/store/")
        assert (client.root / "store" / name).read_text() == f"top on dep {tag}\n"
        store = bed.root / "var/lib/nixwarden/tenants" / tenant / "nix" / "store"
        assert (store / name).read_text() == f"top on dep {tag}\n"
        assert not Path(out).exists()  # never in the host store

    # The host principal, untrusted: a content-addressed build in the host store.
    machines = add_builder(bed, "h-ssh-ng", host, host_key, "ssh-ng")
    tag = secrets.token_hex(6)
    out = build(bed, client, machines, fixed_output_expression(tag))
    assert Path(out).read_text() == f"fixed {tag}\n"
    assert (client.root / "store" / out.removeprefix("/nix/store/")).exists()

    for name, protocol in (("t-ssh-ng", "ssh-ng"), ("t-ssh", "ssh"), ("h-ssh-ng", "ssh-ng")):
        text = bed.client(
            "check-builder", name, "--machines", str(bed.client_root / f"machines-{name}")
        ).stdout.decode()
        assert f"protocol: {protocol}" in text
        assert "latency:" in text and " ms " in text
        if protocol == "ssh-ng":
            assert "version:  2.8" in text, text

    status = json.loads(bed.builder("status", "--json").stdout)
    assert status["initialised"] is True
    by_name = {entry["name"]: entry for entry in status["principals"]}
    assert by_name[tenant]["store"] == "tenant" and by_name[tenant]["user"] == tenant
    assert by_name[tenant]["tenant_store"].endswith(f"/tenants/{tenant}")
    assert by_name[host]["store"] == "host" and by_name[host]["tenant_store"] is None
    # Which mechanism would hold limits here, and that these principals have none.
    hierarchy = limits.detect("/sys/fs/cgroup")  # this host's: cgroup v1 on the testbed
    found = "no cgroup v1 hierarchies" if hierarchy == limits.NO_MECHANISM else hierarchy
    assert status["limits"].startswith(f"{found} at /sys/fs/cgroup: ")
    assert status["limits"].endswith(
        "disk quotas measured every 5 s by the gate ([tenants] disk_images unset)"
    )
    assert by_name[tenant]["limits"] == "-" and by_name[tenant]["limits_not_held"] is None
    for entry in by_name.values():
        assert len(entry["keys"]) == 1 and entry["keys"][0].startswith("ssh-ed25519 SHA256:")
    text = bed.builder("status").stdout.decode()
    assert f"{tenant}: store tenant" in text and f"{host}: store host" in text
    assert f"\nlimits: {found} at /sys/fs/cgroup" in text
    assert "[ ]" not in text


def test_each_command_twice_changes_nothing_the_second_time(bed: ProvisionBed) -> None:
    def state() -> object:
        return tree_state(bed.root, mtimes=True), users_state(
            bed.principals, [bed.gate_group, bed.log_group]
        )

    empty = state()
    dry = bed.builder("init", "--dry-run").stdout.decode()
    assert dry.startswith("would: group ") and state() == empty

    def twice(action: str, *argv: str, client: bool = False) -> None:
        run = bed.client if client else bed.builder
        first = run(action, *argv).stdout.decode()
        assert "nothing to do" not in first
        before = state()
        assert run(action, *argv).stdout.decode() == "nothing to do\n"
        same(state(), before)
        if action != "check-builder":
            assert run(action, *argv, "--dry-run").stdout.decode() == "nothing to do\n"

    twice("init")
    principal = bed.new_principal()
    identity = bed.sshd.client_key(principal)
    key = str(identity.with_suffix(".pub"))
    twice("enroll", "--principal", principal, "--key", key, "--protocols", "ssh-ng,ssh")
    before = state()
    bed.builder("status")
    bed.builder("status", "--json")
    same(state(), before)
    twice("add-builder", *bed.add_builder_argv("b1", principal, identity), client=True)
    # check-builder logs in (the tenant's session state and store are used), and changes
    # none of the client's files.
    before = tree_state(bed.client_root, mtimes=True)
    bed.client("check-builder", "b1")
    same(tree_state(bed.client_root, mtimes=True), before)
    twice("remove-builder", "b1", client=True)
    twice("revoke", "--principal", principal)
    twice("revoke", "--principal", principal, "--remove-user")


def audit(bed: ProvisionBed) -> list[dict[str, object]]:
    """`nixwarden audit` of this builder: its config, the testbed's sshd, the daemon's nix.conf."""
    result = bed.nixwarden(
        "audit", "--format", "json",
        "--config", str(bed.config), "--sshd-config", str(bed.sshd.config),
        "--nix-conf", str(bed.daemon_nix_conf),
        check=False,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr.decode()
    findings: list[dict[str, object]] = json.loads(result.stdout)["findings"]
    return findings


def test_the_audit_finds_nothing_about_what_init_and_enroll_set_up(bed: ProvisionBed) -> None:
    bed.builder("init")
    tenant, _ = enroll(bed, "--protocols", "ssh-ng,ssh", "--write")
    host, _ = enroll(bed, "--store", "host")
    findings = audit(bed)
    # nixwarden's own settings, the drop-in and keys under the root, our users and groups;
    # not the test daemon's nix.conf, nor other tests' users (and their configs) that this
    # sshd's config is evaluated for as well.
    ours = (str(bed.root), tenant, host, bed.gate_group, bed.log_group)
    concerning = [
        finding
        for finding in findings
        if finding["severity"] in ("critical", "high", "medium")
        and any(word in f"{finding.get('file')} {finding['evidence']}" for word in ours)
    ]
    assert concerning == [], json.dumps(concerning, indent=1)

    # It did look: a key without the gate in the tenant's keys file (where the drop-in
    # sends sshd) is found at once.
    keys = bed.root / "etc/nixwarden/authorized_keys" / tenant
    loose = bed.sshd.client_key("loose").with_suffix(".pub").read_text()
    keys.write_text(keys.read_text() + loose)
    flagged = [
        finding
        for finding in audit(bed)
        if finding["rule"] == "ssh-key-unrestricted" and tenant in finding["evidence"]
    ]
    assert flagged and flagged[0]["file"] == str(keys)


# --- bad input ---------------------------------------------------------------------------------


def _everything(bed: ProvisionBed, users: list[str]) -> object:
    return tree_state(bed.root, mtimes=True), users_state(users, [bed.gate_group, bed.log_group])


def _refused(bed: ProvisionBed, kind: str, action: str, *argv: str) -> str:
    run = bed.client if kind == "client" else bed.builder
    result = run(action, *argv, check=False)
    assert result.returncode == 2, result.stderr.decode()
    assert result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_an_existing_user_not_ours_is_refused_unless_named(
    bed: ProvisionBed, users: harness.Users
) -> None:
    bed.builder("init")
    stranger = users.create(groups=())
    identity = bed.sshd.client_key("stranger")
    key = str(identity.with_suffix(".pub"))
    before = _everything(bed, [stranger.name])
    error = _refused(bed, "builder", "enroll", "--principal", stranger.name, "--key", key)
    assert f"unix user {stranger.name} exists and was not made by nixwarden" in error
    assert f"--user {stranger.name}" in error
    assert _everything(bed, [stranger.name]) == before
    # Named, it is used as it is: nixwarden's groups added, its comment and password kept.
    bed.builder("enroll", "--principal", stranger.name, "--key", key, "--user", stranger.name)
    groups = harness.run(["id", "-Gn", stranger.name]).stdout.decode().split()
    assert bed.gate_group in groups and bed.log_group in groups


def test_a_config_that_no_longer_parses_changes_nothing(bed: ProvisionBed) -> None:
    bed.builder("init")
    principal, identity = enroll(bed)
    bed.config.write_text(bed.config.read_text() + "\n[principals.broken\n")
    before = _everything(bed, [principal])
    key = str(identity.with_suffix(".pub"))
    for action, argv in (
        ("init", []),
        ("enroll", ["--principal", bed.new_principal(), "--key", key]),
        ("revoke", ["--principal", principal, "--remove-user"]),
    ):
        error = _refused(bed, "builder", action, *argv)
        assert "config.toml" in error and "not valid TOML" in error
    assert _everything(bed, [principal]) == before


@pytest.mark.parametrize("name", ["../etc", "Alice", "a b", "-rf", "a" * 33, "al\u0456ce", "x\ny"])
def test_an_unsafe_principal_name_is_refused(bed: ProvisionBed, name: str) -> None:
    identity = bed.sshd.client_key("unsafe")
    error = _refused(
        bed, "builder", "enroll", "--principal", name, "--key", str(identity.with_suffix(".pub"))
    )
    assert "--principal" in error
    assert list(bed.root.iterdir()) == []


def test_a_host_key_the_host_does_not_have_is_refused(bed: ProvisionBed) -> None:
    impostor = bed.sshd.client_key("impostor")
    identity = bed.sshd.client_key("client")
    argv = bed.add_builder_argv("b1", "nwtnobody", identity)
    argv[argv.index("--host-key") + 1] = str(impostor.with_suffix(".pub"))
    error = _refused(bed, "client", "add-builder", *argv)
    assert "does not offer the --host-key given" in error
    assert not bed.client_root.exists()


def test_enroll_before_init_is_refused(bed: ProvisionBed) -> None:
    identity = bed.sshd.client_key("early")
    result = bed.builder(
        "enroll", "--principal", bed.new_principal(), "--key", str(identity.with_suffix(".pub")),
        check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert b"run nixwarden builder init first" in result.stderr


def test_a_user_points_their_own_nix_at_a_builder(bed: ProvisionBed, users: harness.Users) -> None:
    """Not root: the user's own ~/.ssh/config, ~/.ssh/known_hosts and ~/.config/nix/machines,
    theirs and private, and nothing of the system's."""
    person = users.create(groups=())
    identity = bed.sshd.client_key("person")
    identity.chmod(0o644)  # the user reads the path only; nothing logs in here
    argv = bed.add_builder_argv("b1", "nwtnobody", identity)
    as_person = [
        "setpriv", f"--reuid={person.uid}", f"--regid={person.gid}", "--init-groups",
        harness.NIXWARDEN, "client", "add-builder", *argv,
    ]  # fmt: skip
    env = harness.base_env(HOME=str(person.home))
    harness.run(as_person, env=env)
    again = harness.run(as_person, env=env)
    assert again.stdout == b"nothing to do\n"
    for relative, mode in ((".ssh/config", 0o600), (".ssh/known_hosts", 0o600),
                           (".config/nix/machines", 0o644)):  # fmt: skip
        path = person.home / relative
        info = path.stat()
        assert (info.st_uid, info.st_mode & 0o777) == (person.uid, mode), relative
    assert (person.home / ".ssh").stat().st_mode & 0o777 == 0o700
    config = (person.home / ".ssh/config").read_text()
    assert config.startswith("# nixwarden: begin builder b1\nHost b1\n")
    assert f"UserKnownHostsFile {person.home}/.ssh/known_hosts" in config
    machines = (person.home / ".config/nix/machines").read_text()
    assert f"ssh-ng://b1 {SYSTEM} {identity} 1 1 - - " in machines


def test_make_install_gives_every_gate_user_an_interpreter(users: harness.Users) -> None:
    """`make install`'s script at a prefix of the test's: an isolated venv, the runtime lock,
    nixwarden linked into the bin directory, usable by another user, refused by nobody."""
    from nixwarden.provision import commands  # noqa: PLC0415

    base = harness.private_dir("nwt-install")
    try:
        prefix, bindir = base / "opt", base / "bin"
        script = Path(__file__).resolve().parents[2] / "scripts" / "install.sh"
        harness.run([str(script), str(prefix), str(bindir)], env=harness.base_env(), timeout=900)
        assert (bindir / "nixwarden").resolve() == (prefix / "bin" / "nixwarden").resolve()
        assert harness.run([str(bindir / "nixwarden"), "--version"]).stdout.startswith(
            b"nixwarden "
        )
        lean = (prefix / "bin" / "nixwarden").read_text().splitlines()
        assert lean[0] == f"#!{prefix}/bin/python3 -IS"  # the lean launcher, not pip's
        assert lean[1].startswith("# nixwarden's lean launcher")
        site = next(prefix.glob("lib/python3*/site-packages/nixwarden"))
        launcher = prefix / "bin" / "nixwarden-gate"
        python = prefix / "bin" / "python3"
        assert commands.gate_command_problem([str(python), str(launcher), str(site)]) is None
        somebody = users.create(groups=())
        result = harness.run(
            ["setpriv", f"--reuid={somebody.uid}", f"--regid={somebody.gid}", "--init-groups",
             str(python), "-I", str(launcher), "--help"],
        )  # fmt: skip
        assert result.stdout.startswith(b"usage: nixwarden gate")
        # The repository's own venv, under a home only its owner may enter, would be refused.
        private = base / "home"
        private.mkdir(mode=0o700)
        assert "not usable by other users" in str(
            commands.gate_command_problem([str(private / "python3")])
            or commands.gate_command_problem([str(private)])
        )
    finally:
        harness.run(["rm", "-rf", str(base)])
