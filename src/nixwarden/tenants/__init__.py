"""Tenant stores: a principal's own /nix, in which it is trusted and nothing else is."""
