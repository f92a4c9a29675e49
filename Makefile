# The two commands that matter:  make demo   and   make test
# Both create .venv and install everything (torch/torchvision pinned, see pyproject.toml).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_HOME ?= demo-home
HOST ?= 127.0.0.1
PORT ?= 8000
# pytest workers (pytest-xdist; each takes whole modules, so module fixtures are built once):
# 2 fits the 2-core CI machine; TEST_WORKERS=0 runs the suite in this process, serially
TEST_WORKERS ?= 2

.PHONY: demo test install lint format browser fonts clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned resolve could pull a different multi-GB build
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e '.[dev,ray]'
	# numba compiles UMAP's kernels into its disk cache once here, not in a first analysis
	$(BIN)/python -c 'from analysis.clusters import compile_umap_kernels; compile_umap_kernels()'
	touch $@

install: $(VENV)/.installed

# Headless Chromium for the browser test of the search page (Debian packages; needs root).
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ] || ! fc-list 2>/dev/null | grep -qi wqy; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing chromium + chromium-driver for the browser test"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver fonts-wqy-zenhei >/dev/null; \
		else \
			echo "note: no chromium and no root/apt-get: the browser test will be skipped"; \
		fi; \
	fi

# A CJK font for the Chinese captions and keywords in the analysis figures (Debian; needs root).
fonts:
	@if ! fc-list 2>/dev/null | grep -qi wqy; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-wqy-zenhei >/dev/null; \
		else \
			echo "note: no CJK font and no root/apt-get: Chinese in the report figures will show as boxes"; \
		fi; \
	fi

demo: install fonts
	TUWEN_HOME=$(DEMO_HOME) $(BIN)/tuwen demo --host $(HOST) --port $(PORT)

test: install browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(DEMO_HOME) .pytest_cache .ruff_cache
