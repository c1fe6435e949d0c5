"""Throwaway machine set-up shared by the system tests, `make demo` and `make bench`.

A real nix-daemon, an sshd on a loopback port, throwaway unix users, a gated builder,
client stores of their own and real store contents. It imports nothing from pytest or
tests/: a missing prerequisite raises `PrerequisiteMissing`, which the test suite turns
into a failure (NIXWARDEN_REQUIRE_SYSTEM=1) or a skip, and the demo and bench into a
one-line message.
"""
