# bgm-batch front door. `make demo` and `make test` work on a fresh Debian machine:
# they install the system packages (apt-get), a virtual environment with the CPU build of
# torch, and the package itself, then run.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
APT_PACKAGES := ffmpeg fluidsynth fluid-soundfont-gm wordnet-base wordnet-sense-index

# Prefect quiet, offline, with its database inside the project.
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export PREFECT_LOGGING_LEVEL ?= WARNING
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup system-deps demo test test-slow test-all lint format bench bench-long audiocraft-env test-audiocraft clean nightly

setup: $(VENV)/.installed

system-deps:
	@if command -v ffmpeg >/dev/null && command -v fluidsynth >/dev/null \
	   && [ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] && [ -f /usr/share/wordnet/data.noun ]; then \
	  echo "system packages present"; \
	else \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); \
	fi

$(VENV)/.installed: pyproject.toml
	$(MAKE) system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0  # the CPU build; an unpinned torch pulls a CUDA build
	$(BIN)/pip install -q -e '.[ml,dev]'
	touch $@

demo: setup
	$(BIN)/python -c 'from bgm_batch.testing.testvideo import ensure_sample_video as make; make("data/sample/video.mp4")'
	$(BIN)/bgm-batch score data/sample/capture --video data/sample/video.mp4 --out out/demo

test: setup
	$(BIN)/pytest -q

test-slow: setup
	$(BIN)/pytest -q -m slow

test-all: setup
	$(BIN)/pytest -q -m 'slow or not slow'

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check src tests flows bench tools

format: setup
	$(BIN)/ruff format src tests flows bench tools
	$(BIN)/ruff check --fix .

# Serve the nightly archive deployment (docs/nightly.md) on the Prefect server of PREFECT_API_URL.
CRON ?= 0 3 * * *
nightly: setup
	@test -n "$(ROOT)" -a -n "$(OUT)" || { echo "usage: make nightly ROOT=DIR OUT=DIR [CONFIG=FILE] [CRON='0 3 * * *']"; exit 2; }
	$(BIN)/python -m bgm_batch.flows.nightly "$(ROOT)" "$(OUT)" --cron "$(CRON)" $(if $(CONFIG),--config "$(CONFIG)")

bench: setup
	$(BIN)/python bench/characterize.py
	$(BIN)/python bench/text.py
	$(BIN)/python bench/audio.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/library.py

# A 10-hour recording end to end (about 10 minutes on 2 cores): memory must stay flat.
bench-long: setup
	$(BIN)/python bench/scale.py --windows 60 3600

clean:
	rm -rf out .prefect .cache .pytest_cache .ruff_cache .hypothesis

# The audiocraft backend's isolated worker environment (Python 3.11, ~6 GB, not in CI).
AUDIOCRAFT_PYTHON ?= python3.11
.venv-audiocraft/.installed: requirements-audiocraft.txt
	$(AUDIOCRAFT_PYTHON) -m venv .venv-audiocraft
	.venv-audiocraft/bin/pip install --no-deps -r requirements-audiocraft.txt
	touch $@

audiocraft-env: .venv-audiocraft/.installed

test-audiocraft: setup audiocraft-env
	$(BIN)/pytest -m audiocraft tests/audio/test_audiocraft.py -q
