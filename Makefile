# One-command workflows. `make run` starts everything locally; `make test` installs whatever a
# fresh machine lacks and runs every check (CI calls it through .ci/run).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_VERSION := $(shell cat .python-version)
PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/$(PYTHON_VERSION)/bin/python3.10) $(shell command -v python3.10))
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SYSTEM_STAMP := var/.system-packages

.PHONY: help install system-packages model run shell check unit integration test lint typecheck pytest validate responses preview conversations whatsapp-templates story-test nlu-test nlu-variations bench soak lock clean

help:
	@echo "make run     start Redis (embedded unless REDIS_URL is set), the action server and Rasa"
	@echo "make check   the fast tier (under a minute): lint, type check, validate, the response"
	@echo "             check and the unit tests (pytest -m unit: no server, process or model)"
	@echo "make test    install what is missing, then make check, the other tests on parallel"
	@echo "             workers, plain rasa test (the stories end to end) and the NLU evaluation"
	@echo "make bench   benchmarks against Rasa's stock parts"
	@echo "make soak    the long fleet run: replicas behind HAProxy, kills, restarts, figures"
	@echo "make shell CHANNEL=voice|sms|whatsapp|chat   talk to the assistant as that channel's customer"
	@echo "           (INBOX=1: and answer yourself from the agent inbox, opened beside it)"
	@echo "make responses              check every response of domain.yml for every channel"
	@echo "make preview RESPONSE=utter_x   print a response as voice, SMS, WhatsApp and chat render it"
	@echo "make whatsapp-templates     create and submit domain.yml's WhatsApp templates at Twilio"
	@echo "make conversations          play tests/conversations/ against a running \`make run\`"
	@echo "make nlu-test               NLU per channel style on held-out phrasings, and cross-validation"
	@echo "make nlu-variations         regenerate data/nlu_generated.yml after editing data/nlu*.yml"
	@echo "make lock    re-pin requirements.lock from requirements.in (and each image's share of it)"

# Plain `rasa test` looks for test stories under "." (Rasa's DEFAULT_E2E_TESTS_PATH, walked with
# links followed: rasa/shared/data.py), which takes in the venv: the Rasa wheel ships the test
# stories of its `rasa init` template (greet, mood_great, ...), which fail against this assistant.
# They are removed from the venv's copy of Rasa; only `rasa init` reads them.
RASA_TEMPLATE_TRIM = rm -rf $(VENV)/lib/python*/site-packages/rasa/cli/initial_project/tests

$(STAMP): requirements.lock
	@test -n "$(PYTHON)" || { echo "Python $(PYTHON_VERSION) not found (Rasa 3.6 needs 3.10): install it, e.g. 'pyenv install $(PYTHON_VERSION)'"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==24.0
	$(PY) -m pip install --quiet -r requirements.lock
	$(RASA_TEMPLATE_TRIM)
	touch $@

install: $(STAMP)

# Debian packages the tests need: Chromium (the browser test, driven by Playwright),
# redis-server 7 (the cluster, Sentinel and TLS fixtures; testkit/processes.py looks for
# /usr/bin/redis-server), HAProxy (the load balancer of the fleet test and `make soak`;
# bench/fleet/local_fleet.py looks for /usr/sbin/haproxy) and faketime (libfaketime: the lease
# test runs replicas whose clocks are an hour off). The packages' services must not start: when
# the machine has no policy-rc.d, one that refuses every start stands in for the install
# (invoke-rc.d and, under systemd, deb-systemd-invoke both ask it).
$(SYSTEM_STAMP): Makefile
	@mkdir -p var
	@if ! command -v chromium >/dev/null || ! test -x /usr/bin/redis-server || ! test -x /usr/sbin/haproxy || ! command -v faketime >/dev/null; then \
		sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
		policy=/usr/sbin/policy-rc.d; added=; \
		if [ ! -e $$policy ]; then \
			printf '#!/bin/sh\nexit 101\n' | $$sudo tee $$policy >/dev/null && $$sudo chmod 755 $$policy && added=1; \
		fi; \
		$$sudo apt-get update -qq && \
			$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium redis-server haproxy faketime >/dev/null; \
		status=$$?; [ -z "$$added" ] || $$sudo rm -f $$policy; exit $$status; \
	fi
	@command -v chromium >/dev/null && test -x /usr/bin/redis-server && test -x /usr/sbin/haproxy && command -v faketime >/dev/null && touch $@

system-packages: $(SYSTEM_STAMP)

model: $(STAMP)
	$(PY) -m devtools.model --quiet

run: $(STAMP)
	$(PY) -m devtools.launcher

# Talk to the assistant as a voice, SMS or chat customer (own Redis and servers on free ports).
CHANNEL ?= chat
shell: $(STAMP) model
	$(PY) -m devtools.shell --channel $(CHANNEL) $(if $(INBOX),--inbox)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# mypy (pinned in requirements.lock): strict on omnichannel/, the default checks plus untyped
# function bodies on the rest; the configuration is in pyproject.toml.
typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP) $(SYSTEM_STAMP) model
	$(PY) -m pytest

# The tests marked `unit`: pure logic, no server, process or trained model (tests/tiers.py fails
# a unit test that starts one), so they answer in seconds.
unit: $(STAMP)
	$(PY) -m pytest -m unit -q

# The fast tier, for the inner loop: everything here is also part of `make test`. Its parts run
# side by side, each one's output printed whole when it ends.
check: $(STAMP)
	@$(MAKE) --no-print-directory -j5 --output-sync=target lint typecheck validate responses unit
	@echo "make check: the fast tier passed (make test runs the rest)"

# Parallel workers for the other tests (pytest-xdist; tests/parallel.py): each has its own Redis
# servers, Rasa stack and ports. The tests wait on servers more than they compute, so more
# workers than cores pay off.
WORKERS ?= 3

# Every test but the unit ones, on $(WORKERS) workers, modules kept whole, the longest first.
integration: $(STAMP) $(SYSTEM_STAMP) model
	$(PY) -m pytest -m "not unit" -n $(WORKERS) --dist loadgroup

# rasa data validate --fail-on-warnings, with the warnings that are noise dropped at their source
# and the rest (an unused response included) failing the run: devtools/validate.py.
validate: $(STAMP)
	$(PY) -m devtools.validate

responses: $(STAMP)
	$(PY) -m devtools.responses check

preview: $(STAMP)
	@test -n "$(RESPONSE)" || { echo "usage: make preview RESPONSE=utter_greet"; exit 2; }
	$(PY) -m devtools.responses preview $(RESPONSE)

conversations: $(STAMP)
	$(PY) -m devtools.conversations

# The WhatsApp templates domain.yml declares, created and submitted at Twilio's Content API
# (CHECK=1: change nothing, exit 1 on drift; REPLACE=1: recreate templates whose text changed).
whatsapp-templates: $(STAMP)
	$(PY) -m devtools.whatsapp_templates $(if $(CHECK),--check) $(if $(REPLACE),--replace)

# Plain `rasa test` (the test stories end to end, NLU and dialogue, then the NLU on data/), every
# failing story listed; results/stories/.
story-test: model
	@$(RASA_TEMPLATE_TRIM)
	$(PY) -m devtools.evaluate stories

# NLU: held-out phrasings per channel style (tests/nlu/), then cross-validation, each with
# thresholds that fail the run; results/nlu/.
nlu-test: model
	$(PY) -m devtools.evaluate nlu

# Regenerate data/nlu_generated.yml from the hand-written examples (typos, spoken numbers and
# openings); a test fails while it is out of date.
nlu-variations: $(STAMP)
	$(PY) -m devtools.nlu_variations

# The fast tier first (a lint error fails in seconds), then the rest side by side: the stories
# and the NLU evaluation use the cores the integration tests leave while they wait on servers.
# Each part's output is printed whole when it ends.
test: check model $(SYSTEM_STAMP)
	@$(MAKE) --no-print-directory -j3 --output-sync=target integration story-test nlu-test
	@echo "make test: all checks passed"

bench: $(STAMP)
	$(PY) -m bench

soak: $(STAMP) $(SYSTEM_STAMP) model
	$(PY) -m bench.fleet.soak

lock:
	rm -rf var/lock-venv && $(PYTHON) -m venv var/lock-venv
	var/lock-venv/bin/pip install --quiet pip==24.0 && var/lock-venv/bin/pip install --quiet -r requirements.in
	(echo "# Generated from requirements.in by \`make lock\` (pip freeze of a clean Python 3.10 venv). Do not edit by hand."; \
	 var/lock-venv/bin/pip freeze --exclude-editable | grep -v -E '^(pip|setuptools|wheel)==' | sort -f) > requirements.lock
	var/lock-venv/bin/python -m devtools.image_locks
	rm -rf var/lock-venv

clean:
	rm -rf $(VENV) models results var .pytest_cache .ruff_cache .mypy_cache
