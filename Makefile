# Two commands for a fresh clone: `make book` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: book test lint unit nbval site screenshots notebooks gpu-check clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# Both editions: the English book in _build/html, then the Chinese one (中文版: _config.zh.yml and the
# _toc.zh.yml that scripts/zh_edition.py writes) built in _build/zh and copied to _build/html/zh, the same
# site's /zh/. Without a _toc.zh.yml (nothing translated yet) only the English book is built.
book: $(STAMP)
	$(BIN)/jupyter-book build . --all -W --keep-going
	if [ -f _toc.zh.yml ]; then \
	  $(BIN)/jupyter-book build . --all -W --keep-going --config _config.zh.yml --toc _toc.zh.yml \
	    --path-output _build/zh && rm -rf _build/html/zh && cp -r _build/zh/_build/html _build/html/zh; \
	else rm -rf _build/html/zh; fi
	@echo "Open _build/html/index.html (English) and _build/html/zh/index.html (中文)"

test: lint unit nbval site

lint: $(STAMP)
	$(BIN)/ruff check shufflenet tests scripts

unit: $(STAMP)
	$(BIN)/python -m pytest tests -q --ignore=tests/test_site.py

# The guard: nbval re-runs every notebook with torch's non-vectorised CPU kernels, so the kernels that
# check the committed outputs differ from those (AVX2, AVX-512, ...) of the machine that wrote them, on
# every commit. An output that only one kind of CPU reproduces fails here. The Colab-like test in `unit`
# (tests/test_colab.py) executes every notebook with the native kernels, so both are covered.
nbval: $(STAMP)
	ATEN_CPU_CAPABILITY=default $(BIN)/python -m pytest --nbval notebooks -q

# The built book as a reader gets it: every link and asset on disk, then every page in headless Chromium
# with the network cut off (skipped, with a message saying so, where no Chromium is installed).
site: book
	$(BIN)/python -m pytest tests/test_site.py -q -rs

# A full-page screenshot of every page, at a desktop's and a phone's width, to look at before committing.
screenshots: book
	$(BIN)/python tests/book_browser.py --out _build/screenshots

# Re-execute every notebook in place, top to bottom in a fresh kernel, to refresh the committed outputs.
# CPU-sized and offline even on a machine with a GPU: SHUFFLENET_FULL_RUN=1 opts in to the full run.
# The English notebooks only: the Chinese ones (*.zh.ipynb) are then rewritten from them.
notebooks: export SHUFFLENET_FULL_RUN ?= 0
notebooks: $(STAMP)
	$(BIN)/python scripts/execute_notebooks.py $(filter-out %.zh.ipynb,$(wildcard notebooks/*.ipynb))
	$(BIN)/python scripts/zh_edition.py build

# The GPU check (scripts/gpu_check.sh): CUDA tests, the full training configuration, the pipeline
# benchmark, all written to OUT, in under 8 minutes. Offline; ARCHIVE is cifar10-jpeg.tar.gz or the folder
# it unpacks to. It installs nothing: .venv's Python where there is one, else python3 (GPU_PYTHON=...).
OUT ?= gpu-check
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(CURDIR)/$(BIN)/python,python3)
gpu-check:
	@test -n "$(ARCHIVE)" || { echo "usage: make gpu-check ARCHIVE=path/to/cifar10-jpeg.tar.gz [OUT=gpu-check]"; exit 2; }
	PYTHON="$(GPU_PYTHON)" scripts/gpu_check.sh "$(ARCHIVE)" "$(OUT)"

clean:
	rm -rf _build
