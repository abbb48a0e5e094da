# The README's two commands: `make demo` and `make test`. Both do all set-up and are idempotent.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION := 2.13.0
# The General MIDI soundfonts of prep/synth.py's presets (demo: the first alone), and their
# Debian packages.
SOUNDFONTS := /usr/share/sounds/sf2/FluidR3_GM.sf2 /usr/share/sounds/sf3/MuseScore_General_Lite.sf3 \
	/usr/share/sounds/sf3/FluidR3Mono_GM.sf3 /usr/share/sounds/sf2/TimGM6mb.sf2 \
	/usr/share/sounds/sf2/sf_GMbank.sf2
SOUNDFONT_PACKAGES := fluid-soundfont-gm musescore-general-soundfont-small fluidr3mono-gm-soundfont \
	timgm6mb-soundfont csound-soundfont
STAMP := $(VENV)/.scorecritic-installed

.PHONY: demo test lint setup system-deps clean

setup: system-deps $(STAMP)

# Debian packages: installed when missing and we are root; otherwise say the one command to run.
system-deps:
	@if (for f in $(SOUNDFONTS); do [ -f $$f ] || exit 1; done) && ldconfig -p | grep -q libfluidsynth; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing fluidsynth and the soundfonts $(SOUNDFONT_PACKAGES) (Debian packages)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fluidsynth $(SOUNDFONT_PACKAGES) >/dev/null; \
	else \
		echo "error: FluidSynth or one of the soundfonts $(SOUNDFONTS) is missing. Run:"; \
		echo "  sudo apt-get install -y fluidsynth $(SOUNDFONT_PACKAGES)"; \
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
