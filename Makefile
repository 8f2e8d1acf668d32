# SimplyTalk backend. `make run` and `make test` set up everything they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

.PHONY: setup run fire test unit lint fuzz bench deploy clean check-tools rebuild-usage migrate

setup: check-tools $(PY_STAMP) $(NODE_STAMP) browser-tools

# Debian's Chromium for the browser tests (tests/browser), installed with apt-get only when missing
.PHONY: browser-tools
browser-tools:
	@command -v chromium >/dev/null || { echo "installing Debian's chromium for the browser tests"; \
		$(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		$(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

check-tools:
	@command -v java >/dev/null || { echo "java (17+) is required for the Firestore and Pub/Sub emulators"; exit 1; }
	@command -v npm >/dev/null || { echo "node and npm are required for the Auth emulator (firebase-tools)"; exit 1; }
	@command -v gcloud >/dev/null || ls /usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator >/dev/null 2>&1 \
		|| { echo "the Google Cloud CLI with its Firestore and Pub/Sub emulators is required"; exit 1; }

$(PY_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

# --omit=optional: firebase-tools' optional native modules (re2, built with node-gyp after a failed
# download from GitHub) are not used by the Auth emulator; skipping them takes npm ci from ~63 s to ~10 s
$(NODE_STAMP): package.json package-lock.json
	npm ci --omit=optional --no-audit --no-fund --loglevel=error
	touch $@

run: setup
	$(BIN)/python -m devtools.stack run

# make fire JOB=usage-rollup: publish a scheduled job's message now to the running `make run` stack
fire: $(PY_STAMP)
	@test -n "$(JOB)" || { echo "usage: make fire JOB=<job>   (jobs: $(BIN)/python -m devtools.scheduler list)"; exit 2; }
	$(BIN)/python -m devtools.scheduler fire $(JOB)

test: setup lint
	$(BIN)/pytest

# the pure core and every service on in-memory repositories: no Java, Node or emulator needed
unit: $(PY_STAMP)
	$(BIN)/pytest tests/unit

# make fuzz [FUZZ_EXAMPLES=300]: the schemathesis run of `make test`, with many more cases, new each run
FUZZ_EXAMPLES ?= 300
fuzz: setup
	SIMPLYTALK_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) SIMPLYTALK_FUZZ_RANDOM=1 $(BIN)/pytest -s tests/emulator/test_fuzz.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: setup
	$(BIN)/python -m devtools.bench

# make rebuild-usage USERS="uid1 uid2" [APPLY=1]  (project from SIMPLYTALK_PROJECT; default: local emulators)
rebuild-usage: setup
	$(BIN)/python -m ops.rebuild_usage $(if $(APPLY),--apply) $(USERS)

# make migrate [DRY_RUN=1] [ONLY=N]  (project from SIMPLYTALK_PROJECT; default: the local emulators)
migrate: setup
	$(BIN)/python -m migrations $(if $(DRY_RUN),--dry-run) $(if $(ONLY),--only $(ONLY))

deploy: setup
	$(BIN)/python -m devtools.deploy

clean:
	rm -rf build .stack .pytest_cache .mypy_cache .ruff_cache bench-results.json
