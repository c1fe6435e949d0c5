"""Confinement: a program or a service that sees only its closure."""
