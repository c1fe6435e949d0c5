"""Confinement (seed 001): a program or a service that sees only its closure."""
