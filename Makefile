# One command each, on a fresh machine: `make demo`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test clean chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch pinned, and first: on this project's machines and CI the pin resolves to a CPU build; on
	# plain PyPI on Linux it is the CUDA build (README, Quick start: how to get the CPU-only one).
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	mkdir -p out
	$(BIN)/vggstyle examples/content/tubingen.jpg examples/style/starry_night.jpg -o out/tubingen_starry_night.png
	@echo "result: out/tubingen_starry_night.png"

# Headless Chromium for tests/test_web_browser.py: Debian's package (Playwright's own browser
# download is never used). Installed when we can (root, as in CI); otherwise that test skips.
chromium:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; fi

test: $(STAMP) chromium
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) out .pytest_cache
