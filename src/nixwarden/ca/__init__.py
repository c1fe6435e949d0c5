"""A team CA for Nix signing keys, in OpenSSH's own formats.

A person's Nix key is certified as an OpenSSH user certificate (`cert.py`) by an
Ed25519 CA key (`cakey.py`), for a validity window (`validity.py`) and a set of
principals (scopes); revocation lists are OpenSSH KRLs (`krl.py`). `policy.py` turns
CA keys, certificates and KRLs into a verification policy for store paths;
`ledger.py` records issued serials; `cli.py` is `nixwarden ca …`.
"""
