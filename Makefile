# The two commands of the quick start are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

.PHONY: install run test bench browser clean

install: $(STAMP)

# Re-runs only when pyproject.toml or constraints.txt change, so a second `make install` is quick.
$(STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade "pip>=23.2"
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[embedded,metrics,test,bench]'
	@rm -f $(VENV)/.installed-*
	@touch $@

run: install
	$(BIN)/python app.py

# Debian's chromium for the browser tests; best effort (the tests say so plainly when it is missing).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "note: chromium not installed; browser tests will be skipped"; }

test: install browser
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
