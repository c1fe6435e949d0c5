"""Just enough ELF to bind a host program that is not in the store (Debian's dash). Pure.

`interpreter(data)` reads the program headers for `PT_INTERP` (the dynamic loader a
dynamically linked program needs); `parse_loader_list` reads what glibc's loader
prints for `--list` (the libraries it would load, resolved to paths).
"""

from __future__ import annotations

import struct

from nixwarden.errors import InvalidInput

PT_INTERP = 3
_MAGIC = b"\x7fELF"


def interpreter(data: bytes, origin: str = "program") -> str | None:
    """The program's `PT_INTERP` path, or None for a static program."""
    if len(data) < 64 or data[:4] != _MAGIC:
        raise InvalidInput(f"{origin}: not an ELF file")
    klass, order = data[4], data[5]
    if klass not in (1, 2) or order not in (1, 2):
        raise InvalidInput(f"{origin}: unknown ELF class or byte order")
    endian = "<" if order == 1 else ">"
    if klass == 2:
        phoff, phentsize, phnum = (
            struct.unpack_from(endian + "Q", data, 32)[0],
            *struct.unpack_from(endian + "HH", data, 54),
        )
    else:
        phoff, phentsize, phnum = (
            struct.unpack_from(endian + "I", data, 28)[0],
            *struct.unpack_from(endian + "HH", data, 42),
        )
    for index in range(phnum):
        offset = phoff + index * phentsize
        if offset + phentsize > len(data) or phentsize < (56 if klass == 2 else 32):
            raise InvalidInput(f"{origin}: truncated ELF program headers")
        p_type = struct.unpack_from(endian + "I", data, offset)[0]
        if p_type != PT_INTERP:
            continue
        if klass == 2:
            p_offset = struct.unpack_from(endian + "Q", data, offset + 8)[0]
            p_filesz = struct.unpack_from(endian + "Q", data, offset + 32)[0]
        else:
            p_offset = struct.unpack_from(endian + "I", data, offset + 4)[0]
            p_filesz = struct.unpack_from(endian + "I", data, offset + 16)[0]
        raw = data[p_offset : p_offset + p_filesz]
        if len(raw) != p_filesz:
            raise InvalidInput(f"{origin}: truncated ELF interpreter")
        path = raw.split(b"\0", 1)[0].decode("utf-8", "strict")
        if not path.startswith("/"):
            raise InvalidInput(f"{origin}: ELF interpreter {path!r} is not absolute")
        return path
    return None


def parse_loader_list(output: str, origin: str = "program") -> tuple[str, ...]:
    """Library paths from `ld.so --list` (ldd's format); the vDSO has no file and is skipped.

    Lines look like `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)`, or
    `/lib64/ld-linux-x86-64.so.2 (0x…)` for the loader itself.
    """
    paths: list[str] = []
    for line in output.splitlines():
        text = line.strip()
        if not text or text.startswith("linux-vdso") or text.startswith("linux-gate"):
            continue
        if "=>" in text:
            name, _, rest = text.partition("=>")
            target = rest.strip().split(" (", 1)[0].strip()
            if not target or target == "not found":
                raise InvalidInput(f"{origin}: library {name.strip()} not found")
        else:
            target = text.split(" (", 1)[0].strip()
        if not target.startswith("/"):
            raise InvalidInput(f"{origin}: unexpected loader output line {text!r}")
        if target not in paths:
            paths.append(target)
    return tuple(paths)
