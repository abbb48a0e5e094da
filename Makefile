# The README's two commands: `make demo` and `make test`. Both do all set-up and are idempotent.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION := 2.13.0
SOUNDFONT := /usr/share/sounds/sf2/FluidR3_GM.sf2
STAMP := $(VENV)/.scorecritic-installed

.PHONY: demo test lint setup system-deps clean

setup: system-deps $(STAMP)

# Debian packages: installed when missing and we are root; otherwise say the one command to run.
system-deps:
	@if [ -f $(SOUNDFONT) ] && ldconfig -p | grep -q libfluidsynth; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing fluidsynth and fluid-soundfont-gm (Debian packages)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fluidsynth fluid-soundfont-gm >/dev/null; \
	else \
		echo "error: FluidSynth and the FluidR3_GM soundfont are missing. Run:"; \
		echo "  sudo apt-get install -y fluidsynth fluid-soundfont-gm"; \
		exit 1; \
	fi

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch is pinned and installed first: an unpinned torch pulls a multi-GB CUDA build.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q --disable-pip-version-check torch==$(TORCH_VERSION)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
