# The README's two commands are `make demo` and `make test`; both install what is missing.
VENV := .venv
PY := $(VENV)/bin/python
# `make install`: for real use, at a prefix every gate user can execute (docs/provision.md).
PREFIX := /opt/nixwarden
BINDIR := /usr/local/bin

.PHONY: deps demo test test-unit test-system bench lint format clean install

deps:
	@scripts/bootstrap.sh

install:
	scripts/install.sh $(PREFIX) $(BINDIR)

demo: deps
	$(PY) -m demo

test: deps
	$(PY) -m pytest -q tests

test-unit: deps
	$(PY) -m pytest -q tests/unit

test-system: deps
	$(PY) -m pytest -q tests/system

bench: deps
	$(PY) -m bench

lint: deps
	$(VENV)/bin/ruff check src testbed tests bench demo
	$(VENV)/bin/ruff format --check src testbed tests bench demo
	$(VENV)/bin/mypy

format: deps
	$(VENV)/bin/ruff format src testbed tests bench demo
	$(VENV)/bin/ruff check --fix src testbed tests bench demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
