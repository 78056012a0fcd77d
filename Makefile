# Écluse — two commands:
#   make up     install everything and start the embedded stack on http://127.0.0.1:8000
#   make test   install everything and run the test suite
# Both are idempotent.

# the distribution's Python when there is one (Debian's python3 + python3-venv, as in
# production): the services' own users must be able to run the virtualenv's interpreter,
# which they cannot when it lives under a private home (pyenv in /root, mode 0700)
PYTHON ?= $(firstword $(wildcard /usr/bin/python3) python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMPS := .make

.PHONY: FORCE up test test-docker-full deps test-deps lint bench clean help workspace-extension system-deps system-test-deps

help:
	@echo "make up      install and start the embedded stack (LDAP, hub, proxy, airlock)"
	@echo "make test    install and run the tests"
	@echo "make test-docker-full   only the long Docker suites (hub image, stack on Docker, workspace host role; make test runs them too)"
	@echo "make lint    ruff"
	@echo "make bench   run every benchmark (see benchmarks/README.md)"

$(STAMPS):
	@mkdir -p $(STAMPS)

# a virtualenv missing, or made from another interpreter (.venv/pyvenv.cfg), is made anew
$(STAMPS)/python: FORCE | $(STAMPS)
	@$(PYTHON) scripts/venv-base.py $(VENV) || { rm -rf $(VENV); touch $@; }
	@test -e $@ || touch $@

FORCE:

$(STAMPS)/venv: pyproject.toml $(STAMPS)/python | $(STAMPS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

$(STAMPS)/node: package.json | $(STAMPS)
	npm install --no-audit --no-fund --loglevel=error
	@touch $@

system-deps:
	@scripts/install-system-deps.sh runtime

system-test-deps:
	@scripts/install-system-deps.sh test

# the workspace extension (server extension + prebuilt JupyterLab extension,
# built with the JupyterLab builder from npm); the script skips an up-to-date build
workspace-extension: $(STAMPS)/venv
	@PY=$(abspath $(PY)) extensions/build.sh

deps: system-deps $(STAMPS)/venv $(STAMPS)/node workspace-extension

test-deps: system-test-deps deps

up: deps
	$(VENV)/bin/ecluse up $(UP_ARGS)

test: test-deps
	$(PY) -m pytest $(PYTEST_ARGS)

test-docker-full: test-deps
	$(PY) -m pytest $(PYTEST_ARGS) -m docker_full

lint: deps
	$(VENV)/bin/ruff check src tests benchmarks

bench: deps
	@status=0; for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || status=1; done; exit $$status

clean:
	rm -rf $(STAMPS) build dist src/*.egg-info
