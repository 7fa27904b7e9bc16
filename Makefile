# jirl: `make demo` trains the default experiment end to end; `make test` runs the test suite.
# Both create (or refresh, when pyproject.toml changes) the virtual environment in .venv.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
WORKDIR ?= runs/arith_iqlearn
DEMO_FLAGS ?=

.PHONY: venv demo test bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,tpu,hf]"
	touch $@

demo: venv
	JAX_PLATFORMS=cpu $(VENV)/bin/jirl train --config experiments/arith.py:iqlearn --workdir $(WORKDIR) \
	    --config.eval.at_start=True $(DEMO_FLAGS)

test: venv
	$(PY) -m pytest -q -n 2 tests

bench: venv
	$(PY) benchmarks/step_time.py
	JAX_PLATFORMS=cpu $(PY) benchmarks/peer_step.py
	JAX_PLATFORMS=cpu $(PY) benchmarks/gail_step.py
	$(PY) benchmarks/online_cost.py
	$(PY) benchmarks/policy_batch.py
	JAX_PLATFORMS=cpu $(PY) benchmarks/loss_memory.py
	$(PY) benchmarks/input_pipeline.py
	$(PY) benchmarks/decode.py
	JAX_PLATFORMS=cpu $(PY) benchmarks/decode_hf.py
	JAX_PLATFORMS=cpu $(PY) benchmarks/soft_vi.py

clean:
	rm -rf $(VENV) runs data *.egg-info
