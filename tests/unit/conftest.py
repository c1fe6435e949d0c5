"""Unit-test set-up: stand-ins for modules not yet on this branch (see ca_standins.py)."""

from tests.unit import ca_standins

ca_standins.install()
