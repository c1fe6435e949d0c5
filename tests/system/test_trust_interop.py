"""The trust core against real Nix 2.8: same bytes, same hashes, keys and caches it accepts.

Paths added to the shared host store get unique names and are deleted afterwards;
everything that must land in a *separate* store goes into a chroot store under /tmp.
"""

from __future__ import annotations

import ctypes
import io
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from nixwarden.nix import nix32
from nixwarden.nix.storepath import StorePath
from nixwarden.trust import cache, export, nar, narinfo
from nixwarden.trust.keys import PublicKey, SecretKey, TrustedKeys
from testbed import harness

NIXWARDEN = harness.NIXWARDEN


@pytest.fixture(scope="module")
def nix(nix_daemon: harness.NixDaemon) -> dict[str, str]:
    """Environment for the nix command line, with nix-command enabled."""
    for tool in ("nix", "nix-store", "nix-hash"):
        harness.need(harness.which(tool) is not None, f"{tool} on PATH")
    return harness.base_env(NIX_CONF_DIR=str(harness.client_nix_conf_dir()))


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    path = harness.world_dir("nwt-trust")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _run(argv: list[str], env: dict[str, str], **kwargs: object) -> bytes:
    return harness.run(argv, env=env, **kwargs).stdout  # type: ignore[arg-type]


def _tree(root: Path) -> dict[str, Path]:
    """A corpus of trees that exercise every corner of the format."""
    root.mkdir()
    cases: dict[str, Path] = {}

    def case(name: str) -> Path:
        cases[name] = root / name
        return root / name

    case("empty-file").write_bytes(b"")
    executable = case("executable")
    executable.write_bytes(b"#!/bin/sh\necho hi\n")
    executable.chmod(0o755)
    case("dangling-symlink").symlink_to("does/not/exist")
    case("absolute-symlink").symlink_to("/etc/hostname")
    case("empty-directory").mkdir()
    deep = case("deep")
    deep.mkdir()
    inner = deep
    for level in range(40):
        inner = inner / f"level{level}"
        inner.mkdir()
    (inner / "bottom").write_bytes(b"deep\n")
    wide = case("wide")
    wide.mkdir()
    for index in range(300):
        (wide / f"entry-{index:04d}").write_bytes(str(index).encode() * (index % 9))
    names = case("non-ascii")
    names.mkdir()
    for name in ("é", "日本語", "emoji-🙂", "Z", "a", "a b", "-dash"):
        (names / name).write_bytes(name.encode())
    os.close(os.open(os.fsencode(names) + b"/raw-\xff\xfe", os.O_CREAT | os.O_WRONLY, 0o644))
    large = case("large")
    large.mkdir()
    (large / "big.bin").write_bytes(os.urandom(3 << 20) * 4)  # 12 MiB, several chunks
    (large / "odd.bin").write_bytes(os.urandom((1 << 20) + 3))
    mixed = case("mixed")
    shutil.copytree(root / "wide", mixed / "wide", symlinks=True)
    (mixed / "link-to-wide").symlink_to("wide")
    (mixed / "run").write_bytes(b"x")
    (mixed / "run").chmod(0o555)
    return cases


@pytest.fixture(scope="module")
def trees(scratch: Path) -> dict[str, Path]:
    return _tree(scratch / "trees")


@pytest.fixture(scope="module")
def added(nix: dict[str, str], trees: dict[str, Path]) -> Iterator[str]:
    """The whole tree corpus added to the host store under a unique name."""
    name = f"nwtrust-corpus-{secrets.token_hex(4)}"
    staged = trees["mixed"].parent.parent / name
    shutil.copytree(trees["mixed"].parent, staged, symlinks=True)
    path = _run(["nix-store", "--add", str(staged)], nix).decode().strip()
    try:
        yield path
    finally:
        harness.run(["nix-store", "--delete", path], env=nix, check=False)


def test_nar_dump_and_hash_match_nix_for_the_corpus(
    nix: dict[str, str], trees: dict[str, Path]
) -> None:
    for name, tree in trees.items():
        ours = _run([NIXWARDEN, "nar", "dump", str(tree)], nix)
        theirs = _run(["nix-store", "--dump", str(tree)], nix)
        assert ours == theirs, name
        hashed = _run([NIXWARDEN, "nar", "hash", str(tree)], nix).decode().strip()
        nix_hash = _run(["nix-hash", "--type", "sha256", "--base32", str(tree)], nix).decode()
        assert hashed == "sha256:" + nix_hash.strip(), name


def test_store_path_dump_hash_and_restore(nix: dict[str, str], added: str, scratch: Path) -> None:
    theirs = _run(["nix-store", "--dump", added], nix)
    assert _run([NIXWARDEN, "nar", "dump", added], nix) == theirs
    recorded = _run(["nix-store", "-q", "--hash", added], nix).decode().strip()
    assert _run([NIXWARDEN, "nar", "hash", added], nix).decode().strip() == recorded
    target = scratch / "restored"
    harness.run([NIXWARDEN, "nar", "restore", str(target)], env=nix, input=theirs)
    assert nar.dump_bytes(target) == theirs
    listing = _run([NIXWARDEN, "nar", "ls"], nix, input=theirs)
    assert b"./deep/level0/level1" in listing
    refused = harness.run(
        [NIXWARDEN, "nar", "restore", str(target)], env=nix, input=theirs, check=False
    )
    assert refused.returncode == 2


def _import_fake_closure(nix: dict[str, str], scratch: Path) -> tuple[str, str]:
    """Two input-addressed paths (top refers to dep) imported with an export stream of ours.

    Input-addressed paths need a signature to cross into a store that requires them;
    content-addressed ones (nix-store --add) do not, so signature tests need these.
    """
    tag = secrets.token_hex(4)
    dep = StorePath(nix32.encode(os.urandom(20)), f"nwtrust-dep-{tag}")
    top = StorePath(nix32.encode(os.urandom(20)), f"nwtrust-top-{tag}")
    (scratch / f"dep-{tag}").mkdir()
    (scratch / f"dep-{tag}" / "lib").write_bytes(os.urandom(5000))
    (scratch / f"top-{tag}").write_bytes(f"#!/bin/sh\nexec {dep.absolute()}/lib\n".encode())
    items = [
        export.ExportItem(top, (dep,), None, str(scratch / f"top-{tag}")),
        export.ExportItem(dep, (), None, str(scratch / f"dep-{tag}")),
    ]
    stream = io.BytesIO()
    export.write(export.topological(items), stream.write)
    harness.run(["nix-store", "--import"], env=nix, input=stream.getvalue())
    return top.absolute(), dep.absolute()


@pytest.fixture(scope="module")
def closure(nix: dict[str, str], scratch: Path) -> Iterator[tuple[str, str]]:
    top, dep = _import_fake_closure(nix, scratch)
    try:
        yield top, dep
    finally:
        harness.run(["nix-store", "--delete", top], env=nix, check=False)
        harness.run(["nix-store", "--delete", dep], env=nix, check=False)


def test_our_export_stream_was_accepted_and_nix_export_parses(
    nix: dict[str, str], closure: tuple[str, str]
) -> None:
    top, dep = closure
    references = _run(["nix-store", "-q", "--references", top], nix).decode().split()
    assert references == [dep]
    stream = _run(["nix-store", "--export", dep, top], nix)
    entries = []
    for entry in export.read(io.BytesIO(stream)):
        recorded = _run(["nix-store", "-q", "--hash", entry.path.absolute()], nix)
        assert entry.nar_digest.hash.to_nix32() == recorded.decode().strip()
        assert entry.nar.read() == _run(["nix-store", "--dump", entry.path.absolute()], nix)
        entries.append((entry.path.absolute(), [r.absolute() for r in entry.references]))
    assert entries == [(dep, []), (top, [dep])]


def test_our_export_stream_imports_into_a_separate_store(
    nix: dict[str, str], closure: tuple[str, str], scratch: Path
) -> None:
    top, dep = closure
    items = []
    for path in (top, dep):
        refs = _run(["nix-store", "-q", "--references", path], nix).decode().split()
        items.append(
            export.ExportItem(
                StorePath.parse(path), tuple(StorePath.parse(r) for r in refs), None, path
            )
        )
    stream = io.BytesIO()
    export.write(export.topological(items), stream.write)
    store = scratch / "import-store"
    harness.run(["nix-store", "--store", str(store), "--import"], env=nix, input=stream.getvalue())
    for path in (top, dep):
        theirs = _run(["nix-store", "--store", str(store), "-q", "--hash", path], nix)
        assert theirs == _run(["nix-store", "-q", "--hash", path], nix)


def _nix_key(nix: dict[str, str], scratch: Path, name: str) -> tuple[Path, Path]:
    secret = scratch / f"{name}.sec"
    public = scratch / f"{name}.pub"
    secret.write_bytes(_run(["nix", "key", "generate-secret", "--key-name", name], nix))
    public.write_bytes(
        _run(["nix", "key", "convert-secret-to-public"], nix, input=secret.read_bytes())
    )
    return secret, public


def test_keys_and_signatures_interoperate(
    nix: dict[str, str], closure: tuple[str, str], scratch: Path
) -> None:
    top, dep = closure
    # A key made by Nix signs here; its signature verifies with Nix.
    nix_secret, nix_public = _nix_key(nix, scratch, f"nixmade-{secrets.token_hex(3)}")
    assert SecretKey.parse(nix_secret.read_text()).public() == PublicKey.parse(
        nix_public.read_text()
    )
    printed = _run([NIXWARDEN, "sign", "--key", str(nix_secret), dep], nix).decode()
    path, signature = printed.split()
    assert path == dep
    unsigned = harness.run(
        ["nix", "store", "verify", "--sigs-needed", "1", "--no-contents", dep],
        env=nix | {"NIX_CONFIG": f"trusted-public-keys = {nix_public.read_text().strip()}"},
        check=False,
    )
    assert unsigned.returncode != 0  # nothing in the store yet: Nix refuses it too
    # Nix's own signature by our key verifies here; ours equals it (Ed25519 is deterministic).
    ours_secret, ours_public = scratch / "ours.sec", scratch / "ours.pub"
    name = f"ours-{secrets.token_hex(3)}"
    args = ["key", "generate", "--name", name, "--secret", str(ours_secret)]
    harness.run([NIXWARDEN, *args, "--public", str(ours_public)], env=nix)
    harness.run(["nix", "store", "sign", "--key-file", str(ours_secret), top], env=nix)
    passed = harness.run([NIXWARDEN, "verify", "--trusted-key", str(ours_public), top], env=nix)
    assert b"1 paths verified" in passed.stderr
    ours_printed = _run([NIXWARDEN, "sign", "--key", str(ours_secret), top], nix).decode()
    info = _run(["nix", "path-info", "--sigs", "--json", top], nix).decode()
    assert ours_printed.split()[1] in info
    nix_verify = harness.run(
        ["nix", "store", "verify", "--sigs-needed", "1", "--no-contents", top],
        env=nix | {"NIX_CONFIG": f"trusted-public-keys = {ours_public.read_text().strip()}"},
        check=False,
    )
    assert nix_verify.returncode == 0, nix_verify.stderr
    # Untrusted and unsigned paths fail here, each named, with exit 1.
    failed = harness.run(
        [NIXWARDEN, "verify", "--check-contents", "--trusted-key", str(nix_public), top, dep],
        env=nix,
        check=False,
    )
    assert failed.returncode == 1
    err = failed.stderr.decode()
    assert f"{top}: signed only by untrusted keys {name}" in err
    assert f"{dep}: no signatures" in err
    assert signature.startswith(nix_public.read_text().split(":")[0] + ":")


def _store_conf(scratch: Path, label: str, public_keys: str) -> dict[str, str]:
    conf = scratch / f"conf-{label}"
    conf.mkdir(exist_ok=True)
    (conf / "nix.conf").write_text(
        "experimental-features = nix-command\nsubstituters =\nrequire-sigs = true\n"
        f"trusted-public-keys = {public_keys}\n"
    )
    return harness.base_env(NIX_CONF_DIR=str(conf))


def test_nix_copy_accepts_our_cache_only_when_trusted_and_untampered(
    nix: dict[str, str], closure: tuple[str, str], scratch: Path
) -> None:
    top, dep = closure
    secret, public = scratch / "cache.sec", scratch / "cache.pub"
    name = f"cache-{secrets.token_hex(3)}"
    harness.run(
        [
            *(NIXWARDEN, "key", "generate", "--name", name),
            *("--secret", str(secret), "--public", str(public)),
        ],
        env=nix,
    )
    for compression in ("xz", "none"):
        directory = scratch / f"cache-{compression}"
        harness.run(
            [
                *(NIXWARDEN, "cache", "export", "--key", str(secret)),
                *("--to", str(directory), "--compression", compression, top),
            ],
            env=nix,
        )
        assert len(list(directory.glob("*.narinfo"))) == 2  # the closure, not just top
        trusting = _store_conf(scratch, "trusting", public.read_text().strip())
        store = scratch / f"copy-{compression}"
        harness.run(
            ["nix", "copy", "--from", f"file://{directory}", "--to", str(store), top],
            env=trusting,
        )
        copied = _run(["nix-store", "--store", str(store), "-q", "--hash", top], nix)
        assert copied == _run(["nix-store", "-q", "--hash", top], nix)
        assert nar.dump_bytes(str(store) + top) == _run(["nix-store", "--dump", top], nix)

    directory = scratch / "cache-xz"
    stranger = SecretKey.generate("stranger-1").public().render()
    distrusting = _store_conf(scratch, "distrusting", stranger)
    refused = harness.run(
        ["nix", "copy", "--from", f"file://{directory}", "--to", str(scratch / "no1"), top],
        env=distrusting,
        check=False,
    )
    assert refused.returncode != 0
    assert b"signature" in refused.stderr

    dep_info = directory / f"{StorePath.parse(dep).hash_part}.narinfo"
    original = dep_info.read_bytes()
    info = narinfo.NarInfo.parse(original)
    dep_info.write_bytes(original.replace(f"NarSize: {info.nar_size}".encode(), b"NarSize: 9"))
    tampered = harness.run(
        ["nix", "copy", "--from", f"file://{directory}", "--to", str(scratch / "no2"), top],
        env=_store_conf(scratch, "trusting", public.read_text().strip()),
        check=False,
    )
    assert tampered.returncode != 0
    dep_info.write_bytes(original)

    # And our reader agrees with Nix on the same cache.
    trusted = TrustedKeys.of([PublicKey.parse(public.read_text())])
    assert cache.BinaryCache(str(directory)).check(StorePath.parse(top), trusted)


def test_narinfos_written_by_nix_parse_and_render_identically(
    nix: dict[str, str], closure: tuple[str, str], scratch: Path
) -> None:
    top, _dep = closure
    secret, public = _nix_key(nix, scratch, f"nixcache-{secrets.token_hex(3)}")
    directory = scratch / "nix-written-cache"
    harness.run(["nix", "copy", "--to", f"file://{directory}?secret-key={secret}", top], env=nix)
    files = sorted(directory.glob("*.narinfo"))
    assert files
    for file in files:
        data = file.read_bytes()
        assert narinfo.NarInfo.parse(data).render() == data
    trusted = TrustedKeys.of([PublicKey.parse(public.read_text())])
    info = cache.BinaryCache(str(directory)).check(StorePath.parse(top), trusted)
    assert info.compression == "xz"


CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "nar"


@pytest.fixture
def small_disk(scratch: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs of our own: a disk that fills up (mounted with mount(2) directly)."""
    mountpoint = scratch / f"disk-{secrets.token_hex(4)}"
    mountpoint.mkdir()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"nwt-trust-disk", os.fsencode(mountpoint), b"tmpfs", 0, b"size=1m,mode=0755"):
        raise OSError(ctypes.get_errno(), "mount tmpfs", str(mountpoint))
    try:
        yield mountpoint
    finally:
        libc.umount2(os.fsencode(mountpoint), 0)
        mountpoint.rmdir()


def test_restore_onto_a_full_disk_is_one_line_and_leaves_nothing(
    nix: dict[str, str], small_disk: Path, scratch: Path
) -> None:
    tree = scratch / f"big-{secrets.token_hex(4)}"
    (tree / "sub").mkdir(parents=True)
    for index in range(40):
        (tree / "sub" / f"small-{index:02d}").write_bytes(b"s" * 1000)
    (tree / "sub" / "zbig").write_bytes(os.urandom(3 << 20))
    archive = _run(["nix-store", "--dump", str(tree)], nix)
    failed = harness.run(
        [NIXWARDEN, "nar", "restore", str(small_disk / "out")], env=nix, input=archive, check=False
    )
    err = failed.stderr.decode()
    assert failed.returncode == 1, err
    assert err == f"nixwarden: error: {small_disk}/out: No space left on device\n"
    assert os.listdir(small_disk) == []
    # The same disk, freed: the same command works.
    (tree / "sub" / "zbig").write_bytes(b"fits now")
    archive = _run(["nix-store", "--dump", str(tree)], nix)
    harness.run([NIXWARDEN, "nar", "restore", str(small_disk / "out")], env=nix, input=archive)
    assert nar.dump_bytes(small_disk / "out") == archive


def test_a_deep_archive_restores_under_a_low_descriptor_limit_as_nix_restores_it(
    nix: dict[str, str], scratch: Path
) -> None:
    archive = (CORPUS / "nar_deep_fd_exhaustion.nar").read_bytes()
    ours, theirs = (
        scratch / f"deep-ours-{secrets.token_hex(4)}",
        scratch / f"deep-nix-{secrets.token_hex(4)}",
    )
    limited = ["sh", "-c", 'ulimit -n 24 && exec "$@"', "limited"]
    harness.run([*limited, NIXWARDEN, "nar", "restore", str(ours)], env=nix, input=archive)
    harness.run(["nix-store", "--restore", str(theirs)], env=nix, input=archive)
    assert nar.dump_bytes(ours) == nar.dump_bytes(theirs) == archive
    assert _run(["nix-hash", "--type", "sha256", "--base32", str(ours)], nix) == _run(
        ["nix-hash", "--type", "sha256", "--base32", str(theirs)], nix
    )
