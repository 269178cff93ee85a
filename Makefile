# The two commands a newcomer needs: `make run` and `make test`. Both work on a fresh machine
# with only Python 3.11+: they create .venv, install the project, and use an embedded
# PostgreSQL (data under .data/) unless DATABASE_URL points at a server.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test test-citus bench-citus lint format install system-deps test-deps openapi bench clean help

help:
	@echo "make run     serve the API on http://127.0.0.1:8000 (prints the docs URL, a token, a curl to try)"
	@echo "make test    run the whole test suite against a real PostgreSQL"
	@echo "             (and the Citus suite when CITUS_SRC names a Citus source tarball)"
	@echo "make test-citus  the API suite on a local Citus cluster (docs/scaling.md)"
	@echo "make lint    ruff (format + lint) and mypy --strict"
	@echo "make openapi regenerate openapi.json from the code (a test fails when it drifts)"
	@echo "make bench   the benchmark (docs/performance.md)"
	@echo "make bench-citus  the same wrk run on PostgreSQL and on a local Citus cluster"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(STAMP)

run: install
	$(BIN)/aurion serve --migrate --print-token

test: install test-deps
	$(BIN)/pytest
	@if [ -n "$(CITUS_SRC)" ]; then $(MAKE) --no-print-directory test-citus; \
	else echo "make test: skipped the Citus suite (CITUS_SRC names no Citus source tarball; see make test-citus)"; fi

# The API suite on Citus (docs/scaling.md, section 4): builds Citus from the source release
# CITUS_SRC once (cached under .data/citus-build/), starts a coordinator and two workers, runs
# `aurion db upgrade` and `aurion db distribute` there, forbids multi-shard statements on the
# database, and runs the tests below with DATABASE_URL pointing at the coordinator.
# Tests that fail on Citus for a known, documented reason run and are reported as XFAIL
# (harness/pytest_citus.py lists them, with the reason).
CITUS_SRC ?=
CITUS_TESTS := tests/citus tests/conversations tests/idempotency tests/events tests/webhooks \
  tests/reliability/test_concurrency.py tests/security/test_token_matrix.py \
  --deselect tests/idempotency/test_idempotency_key.py::TestExpiry::test_purge_deletes_only_expired_keys
test-citus: install
	@bash scripts/install-system-deps.sh clang
	@echo "make test-citus: the purge of expired keys is multi-shard by design: tests/citus/test_maintenance.py runs it instead of tests/idempotency's purge test"
	$(BIN)/python -m harness.citus test --tarball "$${CITUS_SRC:-../shared/vendor/citus-14.0.1.tar.gz}" -- $(CITUS_TESTS)

# The docs-page browser test needs Debian's chromium, the client tests Node.js and npm (their
# npm packages are installed by the tests themselves, with `npm ci`). Best effort: where these
# cannot be installed, those tests skip and say why; the rest of the suite still runs.
test-deps:
	@bash scripts/install-system-deps.sh chromium $$(command -v npm >/dev/null || echo nodejs npm) \
	  || echo "make test-deps: could not install chromium/node; the browser and client tests will skip"

openapi: install
	$(BIN)/aurion openapi openapi.json

lint: install
	$(BIN)/ruff format --check src tests migrations bench harness
	$(BIN)/ruff check src tests migrations bench harness
	$(BIN)/mypy

format: install
	$(BIN)/ruff format src tests migrations bench harness
	$(BIN)/ruff check --fix src tests migrations bench harness

# Debian packages some tests and the benchmark use (wrk, chromium, pgbouncer, nginx, node).
system-deps:
	bash scripts/install-system-deps.sh

# The benchmark (docs/performance.md; about 22 minutes with the scale-out part). Not part of
# `make test`. BENCH_ARGS passes options (BENCH_ARGS="--help" lists them), e.g.
# BENCH_ARGS="--quick": a smoke run of a minute or two that writes no report. SCALE_OUT_ARGS
# passes the scale-out part's (--quick too, implied by BENCH_ARGS="--quick").
SCALE_OUT_ARGS ?= $(if $(findstring --quick,$(BENCH_ARGS)),--quick)

bench: install
	bash scripts/install-system-deps.sh
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.run $(BENCH_ARGS)
	@case " $(BENCH_ARGS) " in *" --help "*|*" -h "*) ;; *) $(MAKE) bench-scale-out ;; esac

# The scale-out run of the benchmark (docs/scaling.md): 1, 2, 4 processes behind nginx, PgBouncer.
bench-scale-out: install
	bash scripts/install-system-deps.sh nginx pgbouncer
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.scale_out $(SCALE_OUT_ARGS)
	@if [ -n "$(CITUS_SRC)" ]; then $(MAKE) --no-print-directory bench-citus; \
	else echo "make bench-scale-out: skipped the Citus configuration (CITUS_SRC names no Citus source tarball; see make bench-citus)"; fi

# The Citus configuration (docs/scaling.md, section 4): the same wrk run through one service
# process on plain PostgreSQL and on a local Citus cluster (coordinator + 2 workers), alternated.
bench-citus: install
	bash scripts/install-system-deps.sh clang
	$(BIN)/python -m bench.citus --tarball "$${CITUS_SRC:-../shared/vendor/citus-14.0.1.tar.gz}" $(BENCH_CITUS_ARGS)

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache
