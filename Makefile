# The two commands: `make up` runs the platform, `make test` runs the tests. Both set themselves up first.
.PHONY: up test setup lint bench

up: setup
	./scripts/up.sh

test: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/pytest

setup:
	./scripts/setup.sh

lint: setup
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .
