"""The push client's pure parts: targets, ssh's argv, outcomes, JSON, progress, usage."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nixwarden.cli import main
from nixwarden.deploy import push, wire
from nixwarden.errors import UsageError

P = "/nix/store/hpi1c1lnw8jb1w6q20b91lh48xrh6051-web"


@pytest.mark.parametrize(
    ("text", "user", "host", "port"),
    [
        ("web1", None, "web1", None),
        ("deploy@web1", "deploy", "web1", None),
        ("deploy@web1:2222", "deploy", "web1", 2222),
        ("web1.example.org:22", None, "web1.example.org", 22),
        ("10.0.0.7", None, "10.0.0.7", None),
        ("[::1]", None, "::1", None),
        ("deploy@[fe80::1%eth0]:2200", "deploy", "fe80::1%eth0", 2200),
        ("a.b@web1", "a.b", "web1", None),
    ],
)
def test_targets_parse_as_nix_names_machines(
    text: str, user: str | None, host: str, port: int | None
) -> None:
    target = push.Target.parse(text)
    assert (target.user, target.host, target.port, target.text) == (user, host, port, text)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "expected [user@]host[:port]"),
        ("-oProxyCommand=sh", "is not a host name"),
        ("deploy@-oProxyCommand=sh", "is not a host name"),
        ("-l@web1", "is not a user name"),
        ("web1:0", "port must be 1 to 65535"),
        ("web1:65536", "port must be 1 to 65535"),
        ("web1:22x", "port must be 1 to 65535"),
        ("web1:\u0663", "port must be 1 to 65535"),
        ("web 1", "is not a host name"),
        ("web1\n", "is not a host name"),
        ("[::1", "malformed [address]"),
        ("[::1]x", "malformed [address]"),
        ("[web1]", "is not a host name"),
        ("@web1", "is not a user name"),
        ("ssh://web1", "not a URL"),
    ],
)
def test_bad_targets_are_usage_errors(text: str, problem: str) -> None:
    with pytest.raises(UsageError) as refused:
        push.Target.parse(text)
    assert problem in str(refused.value)
    assert "\n" not in str(refused.value)


def test_ssh_argv_puts_our_defaults_before_nix_sshopts() -> None:
    options = push.ssh_options({"NIX_SSHOPTS": "-F /tmp/ssh_config -o 'BatchMode no' -v"})
    assert options == ("-F", "/tmp/ssh_config", "-o", "BatchMode no", "-v")
    argv = push.ssh_argv(push.Target.parse("deploy@web1:2222"), options, ssh="/usr/bin/ssh")
    assert argv[0] == "/usr/bin/ssh"
    # ssh keeps the first value of an option: ours must come before the user's.
    assert argv.index("BatchMode=yes") < argv.index("BatchMode no")
    assert "-T" in argv[: argv.index("-F")]
    assert argv[-3:] == ["--", "web1", "nixwarden-receive --protocol 1"]
    assert argv[argv.index("-p") + 1] == "2222"
    assert argv[argv.index("-l") + 1] == "deploy"


def test_ssh_argv_without_user_or_port_and_without_sshopts() -> None:
    argv = push.ssh_argv(push.Target.parse("web1"), push.ssh_options({}))
    assert "-p" not in argv and "-l" not in argv
    assert argv == ["ssh", *push.SSH_DEFAULTS, "--", "web1", push.REMOTE_COMMAND]


def test_unbalanced_quote_in_nix_sshopts_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="NIX_SSHOPTS"):
        push.ssh_options({"NIX_SSHOPTS": "-o 'ProxyJump x"})


def test_json_shape_of_every_outcome() -> None:
    outcomes = [
        push.from_result("a", wire.Result(wire.Status.DEPLOYED, None, 7, 340, 900 << 20)),
        push.from_result("b", wire.Result(wire.Status.UP_TO_DATE, None, 7, 0, 0)),
        push.from_verdict(
            "c", wire.Verdict(False, (wire.Failure(P, "expired 2026-11-20T10:00Z"),))
        ),
        push.from_error(
            "d", wire.Error("no such profile", wire.ErrorKind.REFUSED), committed=False
        ),
        push.from_result(
            "e", wire.Result(wire.Status.FAILED, "activation of web failed: exit status 3")
        ),
        push.from_result("f", wire.Result(wire.Status.FAILED, "disk full")),
        push.from_error("g", wire.Error("wire: bad", wire.ErrorKind.PROTOCOL), committed=False),
        push.Outcome("h", wire.Status.FAILED, "Connection refused", push.Category.TRANSPORT),
    ]
    decoded = [json.loads(json.dumps(outcome.to_json())) for outcome in outcomes]
    keys = {"target", "status", "reason", "category", "generation", "paths", "bytes", "failures"}
    assert all(set(entry) == keys for entry in decoded)
    table = [(e["target"], e["status"], e["category"]) for e in decoded]
    assert table == [
        ("a", "deployed", None),
        ("b", "up-to-date", None),
        ("c", "refused", "verification"),
        ("d", "refused", "verification"),
        ("e", "failed", "activation"),
        ("f", "failed", "import"),
        ("g", "failed", "transport"),
        ("h", "failed", "transport"),
    ]
    assert decoded[0]["generation"] == 7 and decoded[0]["paths"] == 340
    assert decoded[2]["failures"] == [{"path": P, "reason": "expired 2026-11-20T10:00Z"}]
    assert "expired" in decoded[2]["reason"]
    assert push.exit_status(outcomes[:2]) == 0
    assert push.exit_status(outcomes[:3]) == 1
    assert push.exit_status([]) == 0


def test_summaries_are_one_escaped_line() -> None:
    good = push.from_result("web1", wire.Result(wire.Status.DEPLOYED, None, 3, 12, 3 << 20))
    assert good.summary() == "web1: deployed: 12 paths, 3.0 MiB, generation 3"
    bad = push.Outcome("web2", wire.Status.REFUSED, "x\x1b[2Jy\nz", push.Category.VERIFICATION)
    line = bad.summary()
    assert line == "web2: refused: [verification] x\\x1b[2Jy\\x0az"
    assert "\n" not in line and "\x1b" not in line


def test_progress_line() -> None:
    assert push.progress_line(12, 340, 180 << 20, 900 << 20, 95 << 20) == (
        "[12/340 paths, 180/900 MiB, 95 MiB/s]"
    )
    assert push.progress_line(0, 1, 0, 1, 0) == "[0/1 paths, 0/1 MiB, 0 MiB/s]"


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        ([P], "give at least one --to"),
        (["--to", "web1"], "give the store paths"),
        (["--to", "web1", "--rollback"], "--rollback needs --profile"),
        (["--to", "web1", "--profile", "web", "--rollback", P], "--rollback takes no paths"),
        (["--to", "web1", "--profile", "../x", P], "a profile name is"),
        (["--to", "web1", "--to", "web1", P], "given twice"),
        (["--to", "web1", "--dry-run", "--rollback", "--profile", "w"], "not allowed with"),
        (["--to=-oProxyCommand=x", P], "is not a host name"),
        (["--to", "web1", "--jobs", "0", "--profile", "w", "--rollback"], "--jobs must be"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    argv: list[str], problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["push", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nixwarden: error: ")
    assert problem in err
    assert err.count("\n") == 1


@given(st.lists(st.binary(max_size=40), max_size=30), st.integers(1, 16))
@settings(max_examples=300)
def test_chunker_cuts_any_stream_into_full_chunks_in_order(pieces: list[bytes], size: int) -> None:
    chunks: list[bytes] = []
    chunker = push.Chunker(lambda view: chunks.append(bytes(view)), size)
    for piece in pieces:
        chunker.add(piece)
    chunker.flush()
    assert b"".join(chunks) == b"".join(pieces)
    assert all(len(chunk) == size for chunk in chunks[:-1])
    assert all(0 < len(chunk) <= size for chunk in chunks)
