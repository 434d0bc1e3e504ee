# Two commands do all the set-up: `make demo` (the main job) and `make test`.
# Both create/reuse the virtualenv .venv and install layertrim into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU build of torch: a plain `torch` requirement could pull a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0
# The torchvision release built for that torch (its wheel pins torch==2.13.0).
VISION_PIN ?= torchvision==0.28.0
export OMP_NUM_THREADS ?= 2

.PHONY: demo test test-fast bench bench-lm-peers notebooks clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_PIN)"
	$(BIN)/pip install --quiet -e ".[all]" "$(TORCH_PIN)" "$(VISION_PIN)"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/layertrim demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist worksteal --nbmake notebooks tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -x tests

bench: $(STAMP)
	$(BIN)/layertrim bench

# A separate environment for the language-model benchmark with llmcompressor as an
# independent check of the wanda/sparsegpt baselines (it pins its own transformers).
PEERS := .venv-peers
$(PEERS)/.installed: pyproject.toml
	$(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/pip install --quiet "$(TORCH_PIN)"
	$(PEERS)/bin/pip install --quiet llmcompressor -e ".[torch,hf]" "$(TORCH_PIN)"
	touch $@

bench-lm-peers: $(PEERS)/.installed
	$(PEERS)/bin/python benchmarks/bench_llm.py

clean:
	rm -rf $(VENV) $(PEERS) build *.egg-info
