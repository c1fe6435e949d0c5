"""Finding what `/bin/sh` is inside the confinement (reads the file system).

Like NixOS's `confinement.binSh`: by default the host's `/bin/sh`, symlinks resolved
(`readlink -e`). When that lands in the store, the shell's closure joins the
confinement's. On a distribution (Debian: `/bin/sh -> dash` in /usr/bin) it does not:
the host binary is bound at /bin/sh, with the dynamic loader and the libraries the
loader reports for it (`ld.so --list`), each bound read-only at the path it is loaded
from. `--bin-sh PATH` must be in the store.
"""

from __future__ import annotations

import os

from nixwarden import process
from nixwarden.confine.elf import interpreter, parse_loader_list
from nixwarden.confine.plan import BinSh, HostFile
from nixwarden.errors import CommandFailed, InvalidInput
from nixwarden.nix.closure import resolve_root
from nixwarden.nix.storepath import STORE_DIR, in_store
from nixwarden.probes import Seen, ask

HOST_BIN_SH = "/bin/sh"
# What else decides which libraries the loader finds for a host /bin/sh.
LOADER_FILES = ("/etc/ld.so.cache", "/etc/ld.so.preload")


def _executable_file(path: str, what: str, seen: Seen | None) -> None:
    if ask(seen, "executable", path):
        return
    if not os.path.isfile(path):
        raise InvalidInput(f"{what}: {path} is not a file")
    raise InvalidInput(f"{what}: {path} is not executable")


def from_store(text: str, store_dir: str = STORE_DIR, seen: Seen | None = None) -> BinSh:
    """`--bin-sh PATH`: a store path or a path inside one, bound with its closure."""
    root = resolve_root(text, store_dir, seen=seen)
    real = str(ask(seen, "realpath", root.path))
    if not in_store(real, store_dir):
        raise InvalidInput(f"--bin-sh {text!r}: resolves to {real}, outside the store")
    _executable_file(real, f"--bin-sh {text!r}", seen)
    roots = (root.top, resolve_root(real, store_dir, seen=seen).top)
    return BinSh(real, tuple(dict.fromkeys(roots)))


def from_host(
    path: str = HOST_BIN_SH, store_dir: str = STORE_DIR, seen: Seen | None = None
) -> BinSh:
    """The host's /bin/sh target; with its loader and libraries when outside the store.

    Records in `seen` what the answer depends on: the link chain, and for a host binary
    the identity of the binary, its loader, each library and the loader's own files.
    """
    real = str(ask(seen, "realpath", path))
    _executable_file(real, f"host {path}", seen)
    if in_store(real, store_dir):
        return BinSh(real, (resolve_root(real, store_dir, seen=seen).top,))
    ask(seen, "identity", real)
    with open(real, "rb") as handle:
        data = handle.read()
    loader = interpreter(data, real)
    if loader is None:
        return BinSh(real)  # static: nothing else needed
    for file in (loader, *LOADER_FILES):
        ask(seen, "identity", file)
    result = process.run([loader, "--list", real], env={}, check=False, timeout=30)
    if result.returncode != 0:
        raise CommandFailed(
            f"cannot list the libraries of {real} with {loader} --list "
            "(use --bin-sh PATH or --no-bin-sh)"
        )
    files = parse_loader_list(result.stdout.decode("utf-8", "replace"), real)
    if loader not in files:
        files = (loader, *files)
    host_files = []
    for file in files:
        source = str(ask(seen, "realpath", file))
        if in_store(source, store_dir):
            raise InvalidInput(f"{real}: library {file} is in the store; use --bin-sh")
        ask(seen, "identity", source)
        host_files.append(HostFile(source, file))
    return BinSh(real, (), tuple(host_files))
