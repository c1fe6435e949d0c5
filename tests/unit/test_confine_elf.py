"""The ELF interpreter reader and the loader's --list output parser."""

from __future__ import annotations

import struct

import pytest

from nixwarden.confine.elf import interpreter, parse_loader_list
from nixwarden.errors import InvalidInput


def elf64(interp: bytes | None) -> bytes:
    header = bytearray(64)
    header[:4] = b"\x7fELF"
    header[4], header[5] = 2, 1
    phnum = 1
    struct.pack_into("<Q", header, 32, 64)  # e_phoff
    struct.pack_into("<HH", header, 54, 56, phnum)
    ph = bytearray(56)
    payload = (interp or b"") + b"\0"
    struct.pack_into("<I", ph, 0, 3 if interp else 1)
    struct.pack_into("<Q", ph, 8, 64 + 56)
    struct.pack_into("<Q", ph, 32, len(payload))
    return bytes(header + ph + payload)


def test_interpreter() -> None:
    assert interpreter(elf64(b"/lib64/ld-linux-x86-64.so.2")) == "/lib64/ld-linux-x86-64.so.2"
    assert interpreter(elf64(None)) is None


@pytest.mark.parametrize(
    "data", [b"", b"#!/bin/sh\n" + bytes(64), elf64(b"/x")[:100], elf64(b"relative")]
)
def test_bad_elf(data: bytes) -> None:
    with pytest.raises(InvalidInput):
        interpreter(data)


def test_loader_list() -> None:
    output = (
        "\tlinux-vdso.so.1 (0x00007ffd)\n"
        "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n"
        "\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n"
    )
    assert parse_loader_list(output) == (
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/ld-linux-x86-64.so.2",
    )
    with pytest.raises(InvalidInput, match="not found"):
        parse_loader_list("\tlibfoo.so => not found\n")
