.PHONY: up test test-fast lint format chart-check image fleet

## Bring the whole system up (embedded PostgreSQL/Redis unless DATABASE_URL/REDIS_URL are set).
up:
	./bin/atrium up

## Lint and run every suite on real PostgreSQL and Redis. Extra pytest args: make test ARGS="-k token"
test:
	./bin/atrium test $(ARGS)

## Same, skipping tests marked slow (fault and load tests).
test-fast:
	ATRIUM_SKIP_SLOW=1 ./bin/atrium test $(ARGS)

## Ruff, the import rules, and each Node service's types (tsc --noEmit, after npm ci if its lock changed).
lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/lint-imports --no-cache \
	  && .venv/bin/python -c 'import sys; from devtools.test import lint_node; sys.exit(0 if lint_node() else 1)'

format:
	.venv/bin/ruff check --fix . && .venv/bin/ruff format .

## The Helm chart offline: dependency drift, render (Helm's engine), lint, Kubernetes schemas (strict, two versions),
## KEDA's CRDs and the policies, for values.yaml, values-small.yaml and values-large.yaml (devtools/chart.py).
chart-check:
	./bin/atrium chart check

## The OCI image for every process, without any registry (devtools/image.py): localhost/atrium:<version> in podman
## and var/image/atrium-<version>.oci.tar. ARGS="--force" rebuilds even when nothing changed.
image:
	./bin/atrium image $(ARGS)

## The fleet rehearsal: two instances of each service behind HAProxy, rolling upgrades, a node lost, a worker added,
## the webhooks service stopped, under 100 payments/s (devtools/fleet.py). Options: make fleet ARGS="--short".
fleet:
	./bin/atrium fleet $(ARGS)
