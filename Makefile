# The two commands of the quick start are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
COMMA  := ,
SUM    := $(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)
# One stamp per set of extras: each re-installs only when pyproject.toml or
# constraints.txt change, so a second `make install` (or run, test) is quick.
RUN_STAMP   := $(VENV)/.installed-run-$(SUM)
TEST_STAMP  := $(VENV)/.installed-test-$(SUM)
BENCH_STAMP := $(VENV)/.installed-bench-$(SUM)

.PHONY: install install-run install-bench run check-config lint typecheck test bench browser clean

# The shared step: everything `make run` and `make test` need.
install: $(if $(wildcard $(BENCH_STAMP)),,$(TEST_STAMP))
	@$(BIN)/python scripts/fetch_assets.py  # pinned pusher-js into static/vendor (npm pack, hash-checked)
# `make run` needs the runtime and embedded mode only (a bigger install already covers it).
install-run: $(if $(wildcard $(TEST_STAMP) $(BENCH_STAMP)),,$(RUN_STAMP))
	@$(BIN)/python scripts/fetch_assets.py
install-bench: $(BENCH_STAMP)

define pip_install
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade "pip>=23.2"
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[$(1)]'
	@rm -f $(VENV)/.installed-$(2)-*
	@touch $@
endef

$(RUN_STAMP):
	$(call pip_install,embedded,run)
$(TEST_STAMP):
	$(call pip_install,embedded$(COMMA)metrics$(COMMA)test,test)
$(BENCH_STAMP):
	$(call pip_install,embedded$(COMMA)metrics$(COMMA)test$(COMMA)bench,bench)

run: install-run
	$(BIN)/python app.py

# The effective settings, where each came from, and every bad one (exit 2); writes nothing.
check-config: install-run
	@$(BIN)/python app.py --check-config

lint: install
	$(BIN)/ruff check .

# mypy --strict over socialos_app/ (config in pyproject.toml).
typecheck: install
	$(BIN)/mypy

# Debian's chromium for the browser tests; best effort (the tests say so plainly when it is missing).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "note: chromium not installed; browser tests will be skipped"; }

test: install browser lint typecheck
	$(BIN)/python -m pytest -q

bench: install-bench
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis .ruff_cache
