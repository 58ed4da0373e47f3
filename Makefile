# `make up` starts the platform in the background, `make down` stops it, `make test` runs the tests. They set
# themselves up first.
.PHONY: up down demo test test-fast setup lint

up: setup
	./scripts/up.sh

down:
	./scripts/down.sh

# The whole loop on embedded defaults: platform, months, model, traffic with drift, ingest, reports (<= 5 min).
demo: setup
	./scripts/demo.sh

test: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/dg check defs
	.venv/bin/pytest -n 3 --dist worksteal

# The unit layer only: pure logic, no processes, seconds.
test-fast: setup
	.venv/bin/pytest -m unit

setup:
	./scripts/setup.sh

lint: setup
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .
