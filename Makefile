# The two commands of the README's quick start start here: `make test` (and later `make demo`).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test test-unit demo demo-fresh lint bench venv clean lock browser-deps

# Create the virtualenv if missing; reinstall when the lock changes. requirements.lock holds the
# exact versions (with hashes) of requirements.txt and test-requirements.txt, which keep the
# ranges; `make lock` refreshes it after either changes.
$(STAMP): requirements.lock pyproject.toml setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --require-hashes -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	@touch $@

lock: $(STAMP)
	$(BIN)/python -m pip install -q pip-tools
	$(BIN)/pip-compile -q --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url \
		--no-emit-find-links --output-file requirements.lock requirements.txt test-requirements.txt

venv: $(STAMP)

# The orchestrator with the simulated cloud in-process and the embedded bus (no broker needed).
# In another terminal: .venv/bin/astara-ctl --config-file etc/demo.ini browse
demo: $(STAMP)
	$(BIN)/astara-orchestrator --config-file etc/demo.ini

# The demo from scratch. A restarted demo finds the cloud it left (kept in <state_dir>/sim) and the
# store whose debug flags and audit trail name that cloud's routers; this removes the whole state_dir
# of etc/demo.ini (.state) first, unless a demo is still answering on the simulator's port.
DEMO_STATE := .state
demo-fresh: $(STAMP)
	@if $(BIN)/python -c 'import socket, sys; sys.exit(socket.socket().connect_ex(("127.0.0.1", 9900)))'; \
	then echo "make demo-fresh: 127.0.0.1:9900 answers: is a demo running? Stop it first" >&2; exit 1; fi
	rm -rf $(DEMO_STATE)
	$(BIN)/astara-orchestrator --config-file etc/demo.ini

# Every test. pytest's exit code 5 ("no tests collected") is a failure, not a pass.
test: $(STAMP)
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: no tests were collected" >&2; exit 1; fi; exit $$rc

# The pure tests only, in under a minute on 2 cores: nothing outside the pytest process (no broker,
# database or Redis, no process started; the markers: tests/conftest.py). Exit code 5 fails too.
test-unit: $(STAMP)
	@$(BIN)/python -m pytest -m "not services and not heavy" $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test-unit: no tests were collected" >&2; exit 1; fi; exit $$rc

# Debian's chromium, the browser the web console's tests (tests/test_console*.py) and
# bench/console.py drive through Playwright (never a browser Playwright downloads): installed with
# apt-get when missing (as root, as CI runs; .ci/run calls this before make test).
CHROMIUM ?= /usr/bin/chromium
browser-deps:
	@if [ -x "$(CHROMIUM)" ]; then echo "browser-deps: $(CHROMIUM) is there"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	else echo "make browser-deps: $(CHROMIUM) is missing: run sudo apt-get install chromium" >&2; \
		exit 1; fi

# Benchmarks (need RabbitMQ on 127.0.0.1:5672): bus_latency, sim_scale and the scenarios against
# astara-sim (bench/README.md), each a table on stdout and JSON under bench/results/, then one
# summary "figure | measured | target | met?". About ten minutes on 2 cores; the big run:
#   make bench BENCH_ARGS="--routers 10000 --only scale,poll,cold"
bench: $(STAMP)
	$(BIN)/python -m bench.run_all $(BENCH_ARGS)

# Style (ruff), the layers (import-linter contracts in pyproject.toml) and types (mypy).
lint: $(STAMP)
	$(BIN)/python -m ruff check astara_actors tests bench
	$(BIN)/lint-imports
	$(BIN)/python -m mypy

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info .state
