# ssl-zoo: `make demo` and `make test` work on a machine with nothing installed.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_RECIPES ?= audio-wav2vec2-demo tabular-tjepa-demo graph-graphmae-sbm video-videomae-demo \
                pointcloud-pointmae-demo events-coles-demo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install system-deps test test-all demo bench bench-ptls-env lint clean

install: $(STAMP)

# Debian packages the stack needs: ffmpeg (torchcodec), libusb-1.0-0 (open3d), git (hub tests),
# espeak-ng (the demo's synthesised spoken digits).
system-deps:
	@missing=""; \
	command -v ffmpeg >/dev/null 2>&1 || missing="$$missing ffmpeg"; \
	command -v git >/dev/null 2>&1 || missing="$$missing git"; \
	command -v espeak-ng >/dev/null 2>&1 || missing="$$missing espeak-ng"; \
	( /sbin/ldconfig -p 2>/dev/null || ldconfig -p ) | grep -q 'libusb-1.0.so' || missing="$$missing libusb-1.0-0"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(STAMP): pyproject.toml constraints.txt
	@start=$$(date +%s); \
	$(MAKE) system-deps && \
	$(PYTHON) -m venv $(VENV) && \
	$(PY) -m pip install -qq --upgrade "pip>=24" "setuptools>=68" && \
	$(PY) -m pip install -qq -c constraints.txt -e ".[all,dev,bench,trackers,onnx]" && \
	echo $$(( $$(date +%s) - start )) > $(VENV)/.install-seconds && touch $@

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m ""

lint: $(STAMP)
	$(VENV)/bin/ruff check zoo modalities pipelines tests bench

# The main job: synthesise the spoken digits, the moving-digit mp4s and the shapes, pretrain, evaluate, publish to demo/hub,
# reload, embed.
demo: $(STAMP)
	@start=$$(date +%s); \
	ZOO_CACHE=$${ZOO_CACHE:-demo/cache} $(PY) -m pipelines.demo $(DEMO_RECIPES) --output demo && \
	echo "install: $$(cat $(VENV)/.install-seconds 2>/dev/null || echo '?') s (when this checkout was installed);" \
	     "demo: $$(( $$(date +%s) - start )) s"

bench: $(STAMP) bench-ptls-env
	$(PY) -m bench

# pytorch-lifestream for bench/events.py's peer run: its own venv (Lightning, Hydra, spaCy pins) that reuses the
# project's torch through a .pth file instead of installing a second one.
PTLS_VENV := .venv-ptls
bench-ptls-env: $(PTLS_VENV)/.installed-stamp
$(PTLS_VENV)/.installed-stamp: $(STAMP) bench/ptls-requirements.txt
	$(PYTHON) -m venv $(PTLS_VENV)
	$(PY) -c "import site; print(site.getsitepackages()[0])" > \
	    "$$($(PTLS_VENV)/bin/python -c 'import site; print(site.getsitepackages()[0])')/zoo-base.pth"
	$(PTLS_VENV)/bin/pip install -q -r bench/ptls-requirements.txt
	touch $@

clean:
	rm -rf demo runs bench/results .pytest_cache $(PTLS_VENV)
