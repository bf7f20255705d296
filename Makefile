# Set-up and entry points. `make train` and `make test` each build the virtual environment,
# install requirements.txt (the pinned lock), the package itself (editable: `alexnet-tf`, no
# sys.path edits anywhere) and the Fashion-MNIST package on their own. `make test` also installs
# headless Chromium (the browser check, tests/test_browser.py) and Slurm (slurm-wlm, munge) for
# tests/test_slurm.py, which starts a one-node Slurm here, and lints first. `make setup` also compiles
# the fused LRN op (alexnet_tf/ops/build.py); with no compiler it says so in one line and goes on.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: setup train test test-fast lint fashion-mnist chromium slurm ops clean

setup: $(VENV)/.installed fashion-mnist ops

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

# up to date: a no-op; rebuilt when TensorFlow or lrn_op.cc changes; never fails set-up
ops: $(VENV)/.installed
	@$(PY) -m alexnet_tf.ops.build

fashion-mnist:
	@sh scripts/get_fashion_mnist.sh

chromium:
	@sh scripts/get_chromium.sh

slurm:
	@sh scripts/get_slurm.sh

train: setup
	$(PY) train.py

lint: setup
	$(VENV)/bin/ruff check .

# Tests run on PYTEST_WORKERS processes (pytest-xdist; worksteal: the long tests do not queue behind
# each other): 2 fits the 2-core machines, PYTEST_WORKERS=0 runs them in this one process.
PYTEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(PYTEST_WORKERS)),-p no:xdist,-n $(PYTEST_WORKERS) --dist worksteal)

# pytest exits 5 when it collected no tests: that is a failure here, not a pass. --durations: the
# slowest tests at the end of the log, so a suite that grows slow says where.
test: setup chromium slurm lint
	$(PY) -m pytest -q $(XDIST) --durations=25 tests; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$status

# The fast tier: every test not marked slow (pytest.ini), for iteration; `make test` runs them all.
test-fast: setup
	$(PY) -m pytest -q $(XDIST) -m "not slow" tests; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$status

clean:
	rm -rf $(VENV) runs alexnet_tf/ops/_build
