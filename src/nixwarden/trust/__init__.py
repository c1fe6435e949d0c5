"""Nix's formats, exact and strict: nix32, NAR, narinfo, keys, signatures, export, caches."""
