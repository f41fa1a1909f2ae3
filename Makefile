VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test system-deps bench bench-gpu fidelity lint clean hwa recipes

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

test: $(STAMP) system-deps
	$(PY) -m pytest -q

# Debian packages listed in .ci/system-packages (a browser for the report test, SLURM for the
# cluster-recipe test). Installed only where we are root with apt-get and they are missing.
system-deps:
	@pkgs=$$(grep -v '^\s*#' .ci/system-packages | xargs); \
	if [ -n "$$pkgs" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=$$(for p in $$pkgs; do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then \
	    echo "installing Debian packages: $$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null) \
	      || echo "warning: could not install $$missing; the tests that need them are skipped"; \
	  fi; \
	fi

# Plain vs hardware-aware training of the digits MLP, compared on the same simulated chips.
hwa: $(STAMP)
	$(VENV)/bin/mc-engine train studies/hwa_digits_plain.toml --fresh
	$(VENV)/bin/mc-engine train studies/hwa_digits_hwa.toml --fresh
	$(VENV)/bin/mc-engine run studies/hwa_digits.toml

# Eight training recipes (one recipe sweep per model) ranked against plain training on the
# same simulated chips: digits MLP and CNN, default and harsh PCM.
recipes: $(STAMP)
	$(VENV)/bin/mc-engine train studies/hwa_recipes_train_mlp.toml --fresh
	$(VENV)/bin/mc-engine run studies/hwa_recipes.toml
	$(VENV)/bin/mc-engine train studies/hwa_recipes_train_cnn.toml --fresh
	$(VENV)/bin/mc-engine run studies/hwa_recipes_cnn.toml

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
