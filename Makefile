# The two commands a newcomer needs:  `make demo`  and  `make test`.
VENV    ?= .venv
PYTHON  ?= python3
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev
TORCH_WHEEL := $(firstword $(wildcard /opt/wheels/torch-2.13.0*.whl))

.PHONY: demo test setup lint bench clean

$(STAMP): pyproject.toml setup.py
	@# Debian's python3 lacks venv/ensurepip until python3-venv is installed
	@$(PYTHON) -c "import venv, ensurepip" 2>/dev/null || { command -v apt-get >/dev/null && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

$(DEVSTAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[dev]'
ifneq ($(TORCH_WHEEL),)
	# Independent cross-check of reference gradients with torch.autograd (CPU build on disk).
	$(BIN)/pip install -q $(TORCH_WHEEL) || echo "torch not installed: torch cross-checks will be skipped"
endif
	touch $@

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/nabla db upgrade
	$(BIN)/nabla demo
	$(BIN)/nabla serve --bind 127.0.0.1:5000

AXE := build/axe/node_modules/axe-core/axe.min.js

# The suite runs on TEST_WORKERS pytest-xdist workers (more than the cores: many tests wait
# on servers they start); `make test TEST_WORKERS=0` runs it serially, in one process.
TEST_WORKERS ?= 4

test: $(DEVSTAMP) /usr/bin/chromium $(AXE)
	$(BIN)/ruff check server tests bench
	$(BIN)/nabla problems check
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# The browser tests (tests/browser) drive Debian's Chromium; never a browser Playwright downloads.
/usr/bin/chromium:
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

# axe-core (npm) for the accessibility pass in tests/browser/test_flows.py.
$(AXE):
	@command -v npm >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; }
	npm install --prefix build/axe --no-audit --no-fund --no-save axe-core@4

# Every benchmark, one table (docs/benchmarks.md): QUICK=1 for tiny sizes, RECORD=1 to write
# the table at the top of docs/benchmarks.md.
bench: $(DEVSTAMP)
	$(BIN)/python bench/run_all.py $(if $(QUICK),--quick) $(if $(RECORD),--record)

clean:
	rm -rf $(VENV) .pytest_cache
