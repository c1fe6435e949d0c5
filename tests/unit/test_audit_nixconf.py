"""nix.conf is read the way Nix reads it (src/libutil/config.cc): includes, extra-,
comments, whitespace, ordering, and no crash on anything."""

from __future__ import annotations

import pytest

from nixwarden.audit import nixconf
from nixwarden.audit.nixconf import NixConf, ProblemKind

MAIN = "/etc/nix/nix.conf"


def load(files: dict[str, bytes | OSError], main: str = MAIN) -> NixConf:
    def read(path: str) -> bytes:
        if path not in files:
            raise FileNotFoundError(2, "No such file or directory", path)
        content = files[path]
        if isinstance(content, OSError):
            raise content
        return content

    conf, _ = nixconf.load([main], read)
    return conf


def kinds(conf: NixConf) -> list[ProblemKind]:
    return [p.kind for p in conf.problems]


def test_later_settings_override_earlier() -> None:
    conf = load({MAIN: b"sandbox = false\nsandbox = true\n"})
    assert conf.value("sandbox") == "true"
    assert conf.last("sandbox") is not None and conf.last("sandbox").line == 2  # type: ignore[union-attr]


def test_repeated_list_setting_replaces_and_extra_appends_in_order() -> None:
    conf = load(
        {
            MAIN: b"substituters = a\nextra-substituters = b\n"
            b"substituters = c\nextra-substituters = d e\n"
        }
    )
    assert [item for item, _ in conf.items("substituters")] == ["c", "d", "e"]
    assert [s.line for _, s in conf.items("substituters")] == [3, 4, 4]


def test_extra_before_plain_in_the_same_file_is_lost() -> None:
    conf = load({MAIN: b"extra-trusted-users = alice\ntrusted-users = root\n"})
    assert [item for item, _ in conf.items("trusted-users")] == ["root"]


def test_an_include_applies_before_the_including_files_own_settings() -> None:
    # Nix reads an include when it reaches the line, but applies the including file's
    # own settings only after the whole file is parsed.
    conf = load(
        {MAIN: b"sandbox = true\ninclude extra.conf\n", "/etc/nix/extra.conf": b"sandbox = false\n"}
    )
    assert conf.value("sandbox") == "true"
    conf = load({MAIN: b"include extra.conf\n", "/etc/nix/extra.conf": b"sandbox = false\n"})
    assert conf.value("sandbox") == "false"
    assert conf.last("sandbox").file == "/etc/nix/extra.conf"  # type: ignore[union-attr]


def test_experimental_features_are_applied_first_within_a_file() -> None:
    conf = load({MAIN: b"substituters = x\nexperimental-features = nix-command\n"})
    assert [s.name for s in conf.settings] == ["experimental-features", "substituters"]


def test_include_is_relative_to_the_including_file() -> None:
    conf = load(
        {
            MAIN: b"include conf.d/a.conf\n",
            "/etc/nix/conf.d/a.conf": b"include ../b.conf\n",
            "/etc/nix/b.conf": b"require-sigs = false\n",
        }
    )
    assert conf.value("require-sigs") == "false"
    assert conf.files == (MAIN, "/etc/nix/conf.d/a.conf", "/etc/nix/b.conf")


def test_include_cycle_is_reported_and_broken() -> None:
    conf = load(
        {MAIN: b"include a.conf\nsandbox = true\n", "/etc/nix/a.conf": b"include nix.conf\n"}
    )
    assert ProblemKind.INCLUDE_CYCLE in kinds(conf)
    assert conf.value("sandbox") == "true"


def test_self_include_is_a_cycle() -> None:
    conf = load({MAIN: b"include nix.conf\n"})
    assert kinds(conf) == [ProblemKind.INCLUDE_CYCLE]


def test_diamond_includes_are_not_a_cycle() -> None:
    conf = load(
        {
            MAIN: b"include a.conf\ninclude b.conf\n",
            "/etc/nix/a.conf": b"include b.conf\n",
            "/etc/nix/b.conf": b"sandbox = true\n",
        }
    )
    assert kinds(conf) == []


def test_missing_include_and_optional_include() -> None:
    conf = load({MAIN: b"include gone.conf\n!include also-gone.conf\n"})
    assert kinds(conf) == [ProblemKind.INCLUDE_MISSING, ProblemKind.OPTIONAL_INCLUDE_MISSING]
    assert conf.problems[0].detail == "/etc/nix/gone.conf"


def test_unreadable_include_is_reported_and_skipped() -> None:
    conf = load(
        {
            MAIN: b"include secret.conf\nsandbox = true\n",
            "/etc/nix/secret.conf": PermissionError(13, "Permission denied"),
        }
    )
    assert kinds(conf) == [ProblemKind.INCLUDE_UNREADABLE]
    assert "Permission denied" in conf.problems[0].detail
    assert conf.value("sandbox") == "true"


def test_include_needs_exactly_one_argument() -> None:
    conf = load({MAIN: b"include a.conf b.conf\n"})
    assert kinds(conf) == [ProblemKind.ILLEGAL_LINE]


@pytest.mark.parametrize(
    ("line", "value"),
    [
        (b"sandbox = false", "false"),
        (b"  sandbox\t=\tfalse  ", "false"),
        (b"sandbox = false\r", "false"),
        (b"\tsandbox   =    false   # Debian's sandbox does not work", "false"),
        (b"substituters =   a    b  ", "a b"),
        (b"substituters = a#b c", "a"),
    ],
)
def test_odd_whitespace_and_trailing_comments(line: bytes, value: str) -> None:
    conf = load({MAIN: line + b"\n"})
    name = line.split(b"=")[0].strip().decode()
    assert conf.value(name) == value
    assert kinds(conf) == []


@pytest.mark.parametrize(
    "line",
    [
        b"sandbox=false",
        b"sandbox =false",
        b"sandbox= false",
        b"sandbox",
        b"= false",
        b"sandbox : false",
    ],
)
def test_lines_nix_rejects(line: bytes) -> None:
    conf = load({MAIN: line + b"\n"})
    assert kinds(conf) == [ProblemKind.ILLEGAL_LINE]
    assert conf.value("sandbox") is None


def test_vertical_tab_is_not_a_separator() -> None:
    # Nix splits on space, tab, CR and LF only.
    conf = load({MAIN: b"sandbox\x0b= false\n"})
    assert kinds(conf) == [ProblemKind.ILLEGAL_LINE]


def test_empty_value_is_allowed() -> None:
    conf = load({MAIN: b"build-users-group =\nsubstituters =  \n"})
    assert conf.value("build-users-group") == ""
    assert conf.items("substituters") == ()


def test_unknown_settings_are_kept_as_info() -> None:
    conf = load({MAIN: b"sandboxx = false\nextra-sandbox = true\nextra-substituters = x\n"})
    assert [p.detail for p in conf.problems if p.kind is ProblemKind.UNKNOWN_SETTING] == [
        "sandboxx",
        "extra-sandbox",  # sandbox is not a list: extra- does not apply
    ]
    assert conf.value("sandboxx") == "false"
    assert conf.value("sandbox") is None


def test_aliases_resolve_to_the_setting() -> None:
    conf = load({MAIN: b"build-use-sandbox = false\nbinary-caches = http://x\n"})
    assert conf.value("sandbox") == "false"
    assert [item for item, _ in conf.items("substituters")] == ["http://x"]
    assert conf.last("sandbox").written == "build-use-sandbox"  # type: ignore[union-attr]


def test_bad_boolean_is_reported_and_counts_as_default() -> None:
    conf = load({MAIN: b"require-sigs = maybe\n"})
    assert kinds(conf) == [ProblemKind.BAD_VALUE]
    assert conf.boolean("require-sigs", True) == (True, conf.last("require-sigs"))


@pytest.mark.parametrize("text", [b"true", b"yes", b"1"])
def test_nix_booleans(text: bytes) -> None:
    conf = load({MAIN: b"accept-flake-config = " + text + b"\n"})
    assert conf.boolean("accept-flake-config", False)[0] is True


def test_binary_garbage_does_not_crash() -> None:
    garbage = bytes(range(256)) * 4 + b"\xff\xfe\x00sandbox = false\n\x00\x00"
    conf = load({MAIN: garbage})
    assert ProblemKind.ILLEGAL_LINE in kinds(conf)


def test_layers_later_files_override_and_missing_ones_are_skipped() -> None:
    files = {MAIN: b"sandbox = false\n", "/root/.config/nix/nix.conf": b"sandbox = true\n"}
    conf, missing = nixconf.load(
        [MAIN, "/etc/xdg/nix/nix.conf", "/root/.config/nix/nix.conf"],
        lambda p: files[p] if p in files else (_ for _ in ()).throw(FileNotFoundError(p)),
    )
    assert conf.value("sandbox") == "true"
    assert missing == ("/etc/xdg/nix/nix.conf",)


def test_include_depth_is_bounded() -> None:
    files = {MAIN: b"include d0.conf\n"}
    for depth in range(100):
        files[f"/etc/nix/d{depth}.conf"] = f"include d{depth + 1}.conf\n".encode()
    conf = load(files)  # type: ignore[arg-type]
    assert ProblemKind.INCLUDE_TOO_DEEP in kinds(conf)
