.PHONY: up test test-fast lint format fleet

## Bring the whole system up (embedded PostgreSQL/Redis unless DATABASE_URL/REDIS_URL are set).
up:
	./bin/atrium up

## Lint and run every suite on real PostgreSQL and Redis. Extra pytest args: make test ARGS="-k token"
test:
	./bin/atrium test $(ARGS)

## Same, skipping tests marked slow (fault and load tests).
test-fast:
	ATRIUM_SKIP_SLOW=1 ./bin/atrium test $(ARGS)

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/lint-imports --no-cache

format:
	.venv/bin/ruff check --fix . && .venv/bin/ruff format .

## The fleet rehearsal: two instances of each service behind HAProxy, rolling upgrades, a node lost, a worker added,
## the webhooks service stopped, under 100 payments/s (devtools/fleet.py). Options: make fleet ARGS="--short".
fleet:
	.venv/bin/python -m devtools.fleet $(ARGS)
