"""Certified Nix signing keys: OpenSSH certificates from a team CA, and revocation lists."""
