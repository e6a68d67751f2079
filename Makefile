# The two commands of the README:
#   make serve   sets up a virtual environment and serves the example models in model_store/
#   make test    sets up a virtual environment with the test tools and runs every test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STORE ?= model_store
PYTEST_ARGS ?=

.PHONY: serve test setup setup-test system-deps examples lint proto gpu-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamp files make the set-up run once per change of pyproject.toml.
$(VENV)/.serve-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.serve-installed

# checkov (the manifests' and Dockerfile's misconfiguration scanner) pins its own dependencies:
# it gets a virtual environment of its own.
TOOLS ?= .venv-tools
$(TOOLS)/.installed:
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --upgrade pip
	$(TOOLS)/bin/python -m pip install --quiet checkov==3.3.30
	touch $@

# Triton's perf_analyzer, which tests/bench/test_perf_analyzer.py runs against a real server: the
# binary of the tritonclient 2.41 wheel in an environment of its own (the script says why).
PERF_ANALYZER ?= bench/.envs/perf_analyzer
$(PERF_ANALYZER)/.installed: bench/setup_perf_analyzer.sh
	PYTHON=$(PYTHON) bash bench/setup_perf_analyzer.sh
	touch $@

setup: $(VENV)/.serve-installed
setup-test: $(VENV)/.test-installed $(TOOLS)/.installed system-deps $(PERF_ANALYZER)/.installed

# Debian packages the tests use for real: redis-server (session stores), nginx and envsubst (the
# load balancer of the replica tests, rendered from deploy/nginx's template), docker-compose (which
# parses the compose files; no Docker engine is needed), chromium (the playground page's end-to-end
# test, driven by Playwright). kubectl (for `kubectl kustomize`) is expected on the machine.
SYSTEM_PACKAGES := redis-server:redis-server nginx:nginx-light envsubst:gettext-base docker-compose:docker-compose \
  chromium:chromium
system-deps:
	@missing=""; for pair in $(SYSTEM_PACKAGES); do \
	  command -v $${pair%%:*} >/dev/null || [ -x /usr/sbin/$${pair%%:*} ] || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages for the tests:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

serve: setup
	$(BIN)/seqserve serve --store $(STORE)

test: setup-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Rebuilds the example models (trains small Keras models, exports them into model_store/).
examples: setup-test
	$(BIN)/python scripts/build_examples.py --store $(STORE)

# On a device machine with onnxruntime-gpu (see scripts/gpu_check.sh): the gpu tests and the GPU bench.
gpu-check:
	bash scripts/gpu_check.sh

lint: setup-test
	$(BIN)/ruff check service tests scripts bench

proto: setup-test
	bash scripts/gen_proto.sh

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .ruff_cache
