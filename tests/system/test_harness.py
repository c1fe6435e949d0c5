"""The harness itself: a plain key reaches its user, a direct nix-daemon key speaks Nix."""

from __future__ import annotations

from testbed import harness


def test_plain_key_runs_command_as_its_user(sshd: harness.Sshd, users: harness.Users) -> None:
    user = users.create()
    key = sshd.client_key(user.name)
    harness.install_authorized_key(user, key.with_suffix(".pub").read_text())
    alias = sshd.add_alias(f"plain-{user.name}", user, key)
    result = harness.run(sshd.ssh_argv(alias, "id", "-un"), env=harness.base_env())
    assert result.stdout.decode().strip() == user.name


def test_direct_nix_daemon_key_answers_store_ping(
    sshd: harness.Sshd, users: harness.Users, nix_daemon: harness.NixDaemon
) -> None:
    user = users.create()
    key = sshd.client_key(user.name)
    public = key.with_suffix(".pub").read_text().strip()
    harness.install_authorized_key(user, f'restrict,command="nix-daemon --stdio" {public}')
    alias = sshd.add_alias(f"direct-{user.name}", user, key)
    result = harness.run(
        ["nix", "store", "ping", "--store", f"ssh-ng://{alias}"], env=sshd.client_env()
    )
    assert b"Store URL: ssh-ng://" in result.stdout + result.stderr
