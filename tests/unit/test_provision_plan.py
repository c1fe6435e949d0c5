"""The provisioning planners, pure: what each command plans, in which order, and what it
refuses before planning anything."""

from __future__ import annotations

import base64
import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nixwarden import config as config_module
from nixwarden.audit import sshd as sshd_parser
from nixwarden.errors import ConfigError, InvalidInput, Refused
from nixwarden.provision import blocks, builder_plan, client_plan, steps
from nixwarden.provision.builder_plan import BuilderWorld, Enrollment, Revocation, UnixUser
from nixwarden.provision.layout import BuilderLayout, ClientLayout

KEY = ("ssh-ed25519", "AAAAC3NzaC1lZDI1NTE5AAAAIBmwM0lGh2hJtH3cNAwiRjUH9ftS8a0JP7DOjJl7L3Ws", "a@b")
LAYOUT = BuilderLayout.from_options(
    "/srv/t", python="/opt/nixwarden/bin/python3", launcher="/opt/nixwarden/bin/nixwarden-gate"
)


def world(**changes: object) -> BuilderWorld:
    base = BuilderWorld(
        config=builder_plan.starter_config(LAYOUT),
        config_owner=(0o644, "root", "root"),
        tmpfiles=None,
        nix_conf=None,
        nix_conf_owner=None,
        allowed_users=("*",),
        keys_files={},
        users={},
        socket_group="nix-users",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


# --- blocks ----------------------------------------------------------------------------------

FOREIGN = st.lists(
    st.text(
        st.characters(
            blacklist_categories=("Cs",),
            blacklist_characters="\r\n\x85\u2028\u2029\x0b\x0c\x1c\x1d\x1e",
        ),
        max_size=30,
    ).filter(lambda line: not line.startswith("# nixwarden:")),
    max_size=8,
)


@given(FOREIGN, st.booleans())
def test_a_block_added_then_removed_leaves_every_other_line(lines: list[str], first: bool) -> None:
    text = "".join(f"{line}\n" for line in lines)
    added = blocks.replace(text, "f", "builder b1", ["Host b1", "Host *"], first=first)
    assert blocks.find(added, "f", "builder b1") is not None
    assert [line for _n, line in blocks.foreign_lines(added, "f")] == lines
    assert blocks.replace(added, "f", "builder b1", None) == text
    # Replacing keeps the block where it was.
    again = blocks.replace(added, "f", "builder b1", ["Host b1", "Port 2", "Host *"])
    assert again.index("# nixwarden: begin") == added.index("# nixwarden: begin")
    assert blocks.replace(again, "f", "builder b1", ["Host b1", "Host *"]) == added


def test_a_file_without_a_final_newline_keeps_its_last_line() -> None:
    assert blocks.replace("a\nb", "f", "x", ["y"]).startswith("a\nb\n# nixwarden: begin x\n")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("# nixwarden: begin x\ny\n", "has no end line"),
        ("# nixwarden: end x\n", "without its begin"),
        ("# nixwarden: begin x\n# nixwarden: begin y\n", "is not ended before it"),
    ],
)
def test_a_broken_block_is_refused_not_guessed(text: str, problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        blocks.replace(text, "f", "x", ["z"])


# --- init ------------------------------------------------------------------------------------


def test_init_plans_every_piece_and_the_starter_config_loads() -> None:
    plan = builder_plan.init_plan(LAYOUT, world(config=None))
    kinds = [type(step).__name__ for step in plan]
    assert kinds[:2] == ["Group", "Group"]
    assert {"AuditLog", "SessionDirectory", "SshdReload", "Compiled"} <= set(kinds)
    config = config_module.Config.from_toml(builder_plan.starter_config(LAYOUT), LAYOUT.config)
    assert config.gate.audit_log == "/srv/t/var/log/nixwarden/audit.jsonl"
    assert config.gate.state_dir == "/srv/t/run/nixwarden"
    assert config.tenants.root == "/srv/t/var/lib/nixwarden/tenants"
    dropin = next(s for s in plan if isinstance(s, steps.File) and s.path == LAYOUT.sshd_dropin)
    assert dropin.sshd_check == LAYOUT.sshd_config
    # The drop-in comes before the reload, the reload before nothing of a principal.
    assert kinds.index("SshdReload") == plan.index(dropin) + 1


def test_an_existing_config_is_never_rewritten_by_init() -> None:
    plan = builder_plan.init_plan(LAYOUT, world())
    assert not [s for s in plan if isinstance(s, steps.File) and s.path == LAYOUT.config]


def test_a_config_that_no_longer_parses_is_refused() -> None:
    with pytest.raises(ConfigError):
        builder_plan.init_plan(LAYOUT, world(config=b"[gate\n"))


def test_the_dropin_gives_gate_users_every_restriction_and_ends_its_match() -> None:
    text = builder_plan.sshd_dropin(LAYOUT)
    parsed = sshd_parser.parse(text, LAYOUT.sshd_dropin)
    gate = parsed.effective("u", [LAYOUT.gate_group], unknown_matches=False)
    other = parsed.effective("u", ["users"], unknown_matches=True)
    for keyword, value in builder_plan.expected_sshd(LAYOUT):
        assert sshd_parser.value(gate, keyword)[0] == value, keyword
        assert other.get(keyword) is None, keyword  # nobody else is touched
    assert text.decode().rstrip().endswith("Match all")


def test_daemon_settings_never_trust_and_only_when_needed() -> None:
    plan = builder_plan.init_plan(LAYOUT, world())
    assert not [s for s in plan if getattr(s, "path", "") == LAYOUT.nix_conf]
    restricted = world(allowed_users=("@wheel",), nix_conf=b"allowed-users = @wheel\n")
    (step,) = [
        s
        for s in builder_plan.init_plan(LAYOUT, restricted)
        if getattr(s, "path", "") == LAYOUT.nix_conf
    ]
    assert isinstance(step, steps.File)
    text = step.content.decode()
    assert text.startswith("allowed-users = @wheel\n")
    assert f"extra-allowed-users = @{LAYOUT.gate_group}" in text
    assert "trusted-users" not in text.replace("never trusted-users", "")


# --- enrol -----------------------------------------------------------------------------------


def test_the_key_line_is_the_last_step_and_every_other_piece_comes_first() -> None:
    plan = builder_plan.enroll_plan(LAYOUT, world(), Enrollment("alice", KEY))
    last = plan[-1]
    assert isinstance(last, steps.File) and last.path == LAYOUT.keys_file("alice")
    assert (last.mode, last.owner, last.group) == (0o640, "root", "alice")
    line = last.content.decode().splitlines()[1]
    assert line.startswith('restrict,command="/opt/nixwarden/bin/python3 -I ')
    assert (
        "--principal alice --config /srv/t/etc/nixwarden/config.toml --key ssh-ed25519:SHA256:"
        in line
    )
    kinds = [type(step).__name__ for step in plan]
    assert kinds == [
        "User", "Membership", "Membership", "Membership", "File", "TenantDirectory", "File",
        "SessionDirectory", "Compiled", "SshdSettingsFor", "File",
    ]  # fmt: skip
    removed = [s for s in plan if isinstance(s, steps.Membership)][-1]
    assert (removed.group, removed.member) == ("nix-users", False)  # a tenant needs no daemon


def test_a_host_principal_joins_the_socket_group_and_gets_no_tenant_store() -> None:
    plan = builder_plan.enroll_plan(LAYOUT, world(), Enrollment("hydra", KEY, store="host"))
    assert steps.Membership("hydra", "nix-users") in plan
    assert not [s for s in plan if isinstance(s, steps.TenantDirectory)]


def test_the_config_edit_keeps_comments_and_is_idempotent() -> None:
    original = (
        b"# top\n[gate]\nstate_dir = '/run/x'  # keep me\n\n[principals.old]\nstore = 'host'\n"
    )
    request = Enrollment("alice", KEY, protocols=("ssh-ng", "ssh"), write=True)
    edited = builder_plan.with_principal(original, "c", request, "alice")
    assert edited.startswith(original)
    assert (
        b'[principals.alice]\nprotocols = ["ssh-ng", "ssh"]\nstore = "tenant"\nwrite = true\n'
        in edited
    )
    assert builder_plan.with_principal(edited, "c", request, "alice") is edited
    # Options not given keep what the operator set.
    tuned = edited.replace(b'store = "tenant"', b'store = "tenant"\ndisk_quota = "1G"  # mine')
    assert builder_plan.with_principal(tuned, "c", Enrollment("alice", KEY), "alice") is tuned
    assert builder_plan.without_principal(edited, "c", "alice") == original


def test_a_change_the_config_model_refuses_is_not_written() -> None:
    with pytest.raises(ConfigError, match="write = true only matters"):
        builder_plan.with_principal(b"", "c", Enrollment("alice", KEY, write=True), "alice")


def test_deploy_principals_get_role_user_and_profiles_when_the_model_has_them() -> None:
    request = Enrollment("ship", KEY, store="host", role="deploy", profiles=("web",))
    if "role" in {f.name for f in dataclasses.fields(config_module.Principal)}:
        edited = builder_plan.with_principal(b"", "c", request, "shipper")
        assert b'role = "deploy"\nuser = "shipper"\nprofiles = ["web"]' in edited
    else:
        with pytest.raises(ConfigError, match="unknown key"):
            builder_plan.with_principal(b"", "c", request, "shipper")


def test_an_existing_user_that_is_not_ours_is_refused_unless_named() -> None:
    stranger = UnixUser("alice", 1500, "alice", "Alice Liddell", "/bin/bash")
    with pytest.raises(InvalidInput, match=r"not made by nixwarden.*--user alice"):
        builder_plan.enroll_plan(LAYOUT, world(users={"alice": stranger}), Enrollment("alice", KEY))
    named = Enrollment("alice", KEY, user="alice")
    plan = builder_plan.enroll_plan(LAYOUT, world(users={"alice": stranger}), named)
    assert not [s for s in plan if isinstance(s, steps.User)]
    assert steps.Membership("alice", "nix-users", member=False) not in plan  # not ours to change


def test_root_and_a_user_serving_another_principal_are_refused() -> None:
    root = UnixUser("root", 0, "root", "root", "/bin/sh")
    with pytest.raises(InvalidInput, match="is root"):
        builder_plan.enroll_plan(
            LAYOUT, world(users={"root": root}), Enrollment("x", KEY, user="root")
        )
    taken = {"bob": builder_plan.keys_file_content("bob", [])}
    with pytest.raises(InvalidInput, match="already serves principal bob"):
        builder_plan.enroll_plan(LAYOUT, world(keys_files=taken), Enrollment("x", KEY, user="bob"))


def test_enrolling_needs_init_first() -> None:
    with pytest.raises(Refused, match="builder init first"):
        builder_plan.enroll_plan(LAYOUT, world(config=None), Enrollment("alice", KEY))


# --- revoke ----------------------------------------------------------------------------------


def _enrolled() -> BuilderWorld:
    plan = builder_plan.enroll_plan(LAYOUT, world(), Enrollment("alice", KEY))
    config = next(s for s in plan if isinstance(s, steps.File) and s.path == LAYOUT.config)
    keys = plan[-1]
    assert isinstance(keys, steps.File)
    ours = UnixUser("alice", 1500, "alice", builder_plan.USER_COMMENT.format("alice"), "/bin/sh")
    return world(config=config.content, keys_files={"alice": keys.content}, users={"alice": ours})


def test_revoke_takes_the_key_away_first_and_its_record_last() -> None:
    plan = builder_plan.revoke_plan(LAYOUT, _enrolled(), Revocation("alice", remove_user=True))
    first, last = plan[0], plan[-1]
    assert isinstance(first, steps.File) and first.path == LAYOUT.keys_file("alice")
    assert first.content == builder_plan.keys_file_content("alice", [])
    assert last == steps.Absent(LAYOUT.keys_file("alice"))
    assert steps.UserAbsent("alice") in plan and steps.TenantAbsent(LAYOUT.config, "alice") in plan


def test_a_revocation_cut_short_is_found_again() -> None:
    enrolled = _enrolled()
    # The key lines are gone, the record is not: the user is still found.
    cut = dataclasses.replace(
        enrolled, keys_files={"alice": builder_plan.keys_file_content("alice", [])}
    )
    plan = builder_plan.revoke_plan(LAYOUT, cut, Revocation("alice"))
    assert steps.Membership("alice", LAYOUT.gate_group, member=False) in plan
    # Even the record gone: the user nixwarden made says whose it was.
    gone = dataclasses.replace(enrolled, keys_files={})
    plan = builder_plan.revoke_plan(LAYOUT, gone, Revocation("alice"))
    assert steps.SessionDirectoryAbsent("/srv/t/run/nixwarden/sessions/alice") in plan


def test_remove_user_refuses_a_user_nixwarden_did_not_make() -> None:
    enrolled = _enrolled()
    adopted = dataclasses.replace(
        enrolled, users={"alice": UnixUser("alice", 1500, "alice", "Alice", "/bin/sh")}
    )
    with pytest.raises(Refused, match="not removing it"):
        builder_plan.revoke_plan(LAYOUT, adopted, Revocation("alice", remove_user=True))


# --- client ----------------------------------------------------------------------------------

HOST_KEY = ("ssh-ed25519", KEY[1])
CLIENT = ClientLayout.from_options(
    root="/srv/c", ssh_config=None, known_hosts=None, machines=None, system=True, home="/root"
)


def entry(**changes: object) -> client_plan.BuilderEntry:
    values: dict[str, object] = {
        "name": "b1", "host": "10.0.0.5", "host_key": HOST_KEY, "systems": ("x86_64-linux",),
        "port": 2222, "user": "alice", "identity": "/etc/nix/id_b1", "max_jobs": 4,
        "speed_factor": 2, "features": ("kvm", "big-parallel"),
    }  # fmt: skip
    values.update(changes)
    return client_plan.BuilderEntry(**values)  # type: ignore[arg-type]


def test_the_machines_line_is_nixs_format_with_the_pinned_key() -> None:
    line = client_plan.machines_line(entry())
    fields = line.split()
    assert fields[:7] == [
        "ssh-ng://b1", "x86_64-linux", "/etc/nix/id_b1", "4", "2", "kvm,big-parallel", "-",
    ]  # fmt: skip
    assert base64.b64decode(fields[7]).decode() == f"ssh-ed25519 {KEY[1]}"


def test_add_writes_known_hosts_then_ssh_config_then_machines() -> None:
    plan = client_plan.add_plan(CLIENT, client_plan.ClientWorld({}), entry())
    written = [s.path for s in plan if isinstance(s, steps.File)]
    assert written == [CLIENT.known_hosts, CLIENT.ssh_config, CLIENT.machines]
    config = plan[-2]
    assert isinstance(config, steps.File)
    text = config.content.decode()
    for setting in (
        "HostKeyAlias b1", "StrictHostKeyChecking yes", "IdentitiesOnly yes", "BatchMode yes",
        f"UserKnownHostsFile {CLIENT.known_hosts}", "Port 2222", "User alice",
    ):  # fmt: skip
        assert f"    {setting}\n" in text
    assert text.rstrip().splitlines()[-2] == "Host *"


def test_remove_takes_the_machines_line_first() -> None:
    added = client_plan.add_plan(CLIENT, client_plan.ClientWorld({}), entry())
    files = {
        s.path: client_plan.FileState(s.content, (s.mode, "root", "root"))
        for s in added
        if isinstance(s, steps.File)
    }
    plan = client_plan.remove_plan(CLIENT, client_plan.ClientWorld(files), "b1")
    assert [s.path for s in plan] == [CLIENT.machines, CLIENT.ssh_config, CLIENT.known_hosts]  # type: ignore[union-attr]
    assert all(s.content == b"" for s in plan)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "line",
    [
        "b1 ssh-ed25519 AAAAother",
        "other,b1 ssh-rsa AAAAother",
        "b? ssh-ed25519 AAAAother",
        "@cert-authority * ssh-ed25519 AAAAca",
        # ssh-keygen -H of "b1" with this salt
        "|1|c2FsdHNhbHRzYWx0c2FsdHNhbHQ=|"
        + base64.b64encode(
            __import__("hmac").new(b"saltsaltsaltsaltsalt", b"b1", "sha1").digest()
        ).decode()
        + " ssh-ed25519 AAAAother",
    ],
)
def test_a_key_for_the_name_that_is_not_ours_is_refused(line: str) -> None:
    files = {
        CLIENT.known_hosts: client_plan.FileState(f"{line}\n".encode(), (0o644, "root", "root"))
    }
    with pytest.raises(InvalidInput, match="did not pin"):
        client_plan.add_plan(CLIENT, client_plan.ClientWorld(files), entry())


def test_other_hosts_and_revocations_are_kept() -> None:
    kept = "other ssh-ed25519 AAAAx\n@revoked b1 ssh-ed25519 AAAAold\n"
    files = {CLIENT.known_hosts: client_plan.FileState(kept.encode(), (0o600, "root", "root"))}
    plan = client_plan.add_plan(CLIENT, client_plan.ClientWorld(files), entry())
    known = next(s for s in plan if isinstance(s, steps.File) and s.path == CLIENT.known_hosts)
    assert known.content.decode().startswith(kept) and known.mode == 0o600


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"name": "b1 b2"}, "NAME"),
        ({"name": "-oProxyCommand=x"}, "NAME"),
        ({"name": "b1#x"}, "NAME"),
        ({"host": "h;id"}, "--host"),
        ({"host": "h\nHost *"}, "--host"),
        ({"user": "root user"}, "--user"),
        ({"systems": ("x86_64 linux",)}, "--systems"),
        ({"systems": ()}, "at least one system"),
        ({"features": ("kvm;big",)}, "--features"),
        ({"port": 70000}, "not a TCP port"),
        ({"protocol": "http"}, "ssh-ng or ssh"),
    ],
)
def test_unsafe_builder_values_are_refused(changes: dict[str, object], problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        entry(**changes)
