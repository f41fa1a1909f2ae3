VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench bench-gpu fidelity lint clean hwa

# The CPU wheel of torch first (a local file on the project machines), so that the unpinned
# torch>=2.1 of pyproject.toml is already satisfied and no CUDA build is pulled; where that wheel
# does not exist, any recent torch will do.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0 || $(PY) -m pip install -q torch
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/mc-engine run studies/quickstart.toml

test: $(STAMP)
	$(PY) -m pytest -q

# Plain vs hardware-aware training of the digits MLP, compared on the same simulated chips.
hwa: $(STAMP)
	$(VENV)/bin/mc-engine train studies/hwa_digits_plain.toml --fresh
	$(VENV)/bin/mc-engine train studies/hwa_digits_hwa.toml --fresh
	$(VENV)/bin/mc-engine run studies/hwa_digits.toml

bench: $(STAMP)
	$(PY) -m mc_engine.bench

# The GPU check (mc_engine/bench/gpu.py). On the GPU machine, without a venv or network:
#   pip install --no-deps --no-build-isolation -e . && python -m mc_engine.bench gpu
bench-gpu: $(STAMP)
	$(PY) -m mc_engine.bench gpu

fidelity: $(STAMP)
	$(PY) -m mc_engine.bench fidelity

lint: $(STAMP)
	$(VENV)/bin/ruff check mc_engine tests

clean:
	rm -rf $(VENV) results/.cache
