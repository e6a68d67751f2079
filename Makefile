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

setup: $(VENV)/.serve-installed
setup-test: $(VENV)/.test-installed system-deps

# The session tests start a real redis-server (Debian package).
system-deps:
	@command -v redis-server >/dev/null || { \
	  echo "installing redis-server (Debian package) for the session store tests"; \
	  apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }

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
	rm -rf $(VENV) .pytest_cache .ruff_cache
