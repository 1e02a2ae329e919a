# asrflow: `make run` and `make test` install everything they need, then do their job.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := run

PYTHON_SYS ?= python3
VENV       := .venv
BENCH_VENV := .venv-bench
PY         := $(VENV)/bin/python
KENLM_VER  := 0.3.0
UV_VER     := 0.13.9
KENLM_DIR  := .tools/kenlm
APT_PKGS   := sox libsox-fmt-all espeak-ng build-essential cmake zlib1g-dev libbz2-dev liblzma-dev \
              libboost-program-options-dev libboost-system-dev libboost-thread-dev libboost-test-dev git \
              chromium-headless-shell slurm-wlm munge postgresql
# Python may cache bytecode here even where PYTHONDONTWRITEBYTECODE is set (as on our build
# machines): uv installs without bytecode, so each of a run's ~15 Python processes (every stage,
# torchrun's trainer, Snakemake, DVC) would compile what it imports again (the stats stage under
# cProfile: 6.9 of its 13.8 s). Cached, each module is compiled once, into .venv and the
# git-ignored __pycache__ dirs.
unexport PYTHONDONTWRITEBYTECODE
# Tools the pipeline calls are found on PATH: the venv's (snakemake, dvc, torchrun) and KenLM's.
export PATH := $(CURDIR)/$(VENV)/bin:$(CURDIR)/$(KENLM_DIR)/bin:$(PATH)
JOBS       ?= $(shell nproc)
# The MLflow UI listens on this machine only; MLFLOW_HOST=0.0.0.0 exposes it to the network.
MLFLOW_HOST ?= 127.0.0.1
MLFLOW_PORT ?= 5000
DATASET    ?= synth

.PHONY: install system-deps run repro test bench report mlflow-ui mlflow-server clean distclean

install: system-deps $(VENV)/.installed $(KENLM_DIR)/bin/lmplz

# Debian packages: espeak-ng + sox make the synth corpus; chromium-headless-shell is the browser
# the MLflow UI test drives; slurm-wlm, munge and postgresql are the cluster and tracking store
# tests/test_cluster.py starts (tests/cluster.py: nothing is started as a system service); the
# rest builds KenLM.
system-deps:
	@missing=$$(for p in $(APT_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# uv installs the pinned stack from its cache by hard links: ~4 s warm, ~20 s cold, against
# ~2.5 min for pip unpacking the 5 GB torch/CUDA wheel set every time.
$(VENV)/.installed: requirements.txt pyproject.toml
	[ -x $(PY) ] || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check uv==$(UV_VER)
	$(VENV)/bin/uv pip install -q --python $(PY) -r requirements.txt
	$(VENV)/bin/uv pip install -q --python $(PY) --no-deps -e .
	touch $@

# KenLM's lmplz/build_binary: no Debian package exists, so build them from the PyPI sdist.
$(KENLM_DIR)/bin/lmplz: | $(VENV)/.installed
	rm -rf $(KENLM_DIR)/src && mkdir -p $(KENLM_DIR)/src $(KENLM_DIR)/bin
	$(PY) -m pip download -q kenlm==$(KENLM_VER) --no-deps --no-binary kenlm -d $(KENLM_DIR)/src
	tar -xzf $(KENLM_DIR)/src/kenlm-$(KENLM_VER).tar.gz -C $(KENLM_DIR)/src
	# Compiler output goes to a log (KenLM's sources raise many deprecation warnings); shown on failure.
	{ cmake -S $(KENLM_DIR)/src/kenlm-$(KENLM_VER) -B $(KENLM_DIR)/build -DCMAKE_BUILD_TYPE=Release -DKENLM_MAX_ORDER=6 && \
	  cmake --build $(KENLM_DIR)/build -j$(JOBS) --target lmplz build_binary query; } > $(KENLM_DIR)/build.log 2>&1 \
	  || { tail -40 $(KENLM_DIR)/build.log; echo "KenLM build failed: full log in $(KENLM_DIR)/build.log"; exit 1; }
	cp $(KENLM_DIR)/build/bin/lmplz $(KENLM_DIR)/build/bin/build_binary $(KENLM_DIR)/build/bin/query $(KENLM_DIR)/bin/
	rm -rf $(KENLM_DIR)/src

# The main job: the whole chain on the embedded default dataset.
run: install
	$(VENV)/bin/snakemake -j $(JOBS) reports/$(DATASET)_wer.md

# dvc repro with params.yaml validated before DVC removes any output (ARGS: dvc repro's, e.g. ARGS=train)
repro: install
	$(VENV)/bin/asrflow repro $(ARGS)

# The suite on $(TEST_JOBS) pytest-xdist workers, each test file whole on one worker (its module
# fixtures, the expensive runs, are made once).
TEST_JOBS  ?= $(JOBS)
test: install
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile tests

# The peer decoder bench_decode.py compares against lives in its own environment:
# pyctcdecode pins numpy<2, which would drag the product's stack back, so it is
# installed with --no-deps beside the numpy 1.x, kenlm and pygtrie it imports.
$(BENCH_VENV)/.installed: | $(VENV)/.installed
	[ -x $(BENCH_VENV)/bin/python ] || $(PYTHON_SYS) -m venv $(BENCH_VENV)
	$(VENV)/bin/uv pip install -q --python $(BENCH_VENV)/bin/python numpy==1.26.4 kenlm==$(KENLM_VER) pygtrie==2.5.0
	$(VENV)/bin/uv pip install -q --python $(BENCH_VENV)/bin/python --no-deps pyctcdecode==0.5.0
	touch $@

# Each benchmark prints one JSON object as its last line and writes reports/bench/<name>.json
# (with the commit, date and machine); then docs/BENCHMARKS.md is rendered from them.
bench: install $(BENCH_VENV)/.installed
	@benches="$(wildcard bench/bench_*.py)"; [ -n "$$benches" ] || { echo "no benchmarks under bench/ yet"; exit 0; }; \
	for b in $$benches; do $(PY) $$b; done
	$(PY) bench/page.py

# Snakemake's HTML report of the finished run (figures and tables with captions).
report: install
	$(VENV)/bin/snakemake --report reports/$(DATASET)_report.html

mlflow-ui: install
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --host $(MLFLOW_HOST) --port $(MLFLOW_PORT)

# A tracking server for a team or a cluster. Its SQLite store and artifact directory are inside
# the repo by default; artifacts are proxied (clients upload through the server). Stages log
# to it with MLFLOW_TRACKING_URI=http://<host>:$(MLFLOW_PORT); MLFLOW_HOST=0.0.0.0 lets other
# machines reach it. A team's store: MLFLOW_BACKEND=postgresql://user:password@db/mlflow.
MLFLOW_BACKEND   ?= sqlite:///mlruns/server.db
MLFLOW_ARTIFACTS ?= mlruns/server-artifacts
MLFLOW_WORKERS   ?= 2
mlflow-server: install
	mkdir -p mlruns
	$(VENV)/bin/mlflow server --backend-store-uri $(MLFLOW_BACKEND) --artifacts-destination $(MLFLOW_ARTIFACTS) \
	  --host $(MLFLOW_HOST) --port $(MLFLOW_PORT) --workers $(MLFLOW_WORKERS)

clean:
	rm -rf data models results metrics plots logs benchmarks cache mlruns reports/*_wer.md reports/*_report.html reports/*.png .snakemake test-artifacts

distclean: clean
	rm -rf $(VENV) $(BENCH_VENV) .tools
