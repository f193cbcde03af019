# luodi: `make export TARGET=ort|openvino|trt [TRT_ARCH=sm89]` sets up, exports the default model and prints a generation;
# `make test`; `make bundle TARGET=... [MODEL=...]` packs the export into build/<model>-<target>.tar for a device.
# `make export` and `make bundle` pass --force: they replace their own earlier export/bundle, never anything else.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TARGET ?= ort
MODEL  ?= smollm2-135m
OUT    ?= build/$(MODEL)-$(TARGET)
BUNDLE ?= $(OUT).tar
PROMPT ?= What is the capital of France?
THREADS ?= 2
TRT_ARCH ?=
# a trt export's engine needs an NVIDIA GPU; the generation here runs the same graph under ONNX Runtime CPU
# (scripts/gpu_check.sh runs the engine itself on a GPU machine)
EXPORT_FLAGS := $(if $(TRT_ARCH),--trt-arch $(TRT_ARCH),)
GEN_FLAGS := $(if $(filter trt,$(TARGET)),--backend ort,)

.PHONY: setup export test bench bundle clean

setup: $(VENV)/.installed

# The editable install brings every dependency (torch pinned to the CPU build, transformers pinned).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

export: setup
	$(PY) -m luodi export $(MODEL) --target $(TARGET) --out $(OUT) --force $(EXPORT_FLAGS)
	$(PY) -m luodi generate $(OUT) $(GEN_FLAGS) --chat --prompt "$(PROMPT)" --max-new-tokens 64

$(OUT)/manifest.json: | setup
	$(PY) -m luodi export $(MODEL) --target $(TARGET) --out $(OUT) $(EXPORT_FLAGS)

# pytest exits 5 when it collected no test: that is a failure here, not a pass. Two workers (pytest-xdist):
# most tests run on one core, and the suite takes about half as long (tests/conftest.py keeps them apart).
TEST_WORKERS ?= 2
test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup; rc=$$?; if [ $$rc -eq 5 ]; then echo "make test: no tests were collected" >&2; exit 1; fi; exit $$rc

# W1-like (chat prompt, 128 new tokens) and W2-like (512-token prompt, 32 new tokens); medians of 5 runs.
bench: $(OUT)/manifest.json
	$(PY) -m luodi bench $(OUT) $(GEN_FLAGS) --chat --prompt "$(PROMPT)" --new-tokens 128 --ignore-eos --repeat 5 --threads $(THREADS)
	$(PY) -m luodi bench $(OUT) $(GEN_FLAGS) --prompt-tokens 512 --new-tokens 32 --ignore-eos --repeat 5 --threads $(THREADS)

# One artifact for a device (model, tokenizer, chat template, defaults, manifest with checksums, README), checked.
bundle: $(OUT)/manifest.json
	$(PY) -m luodi bundle $(OUT) --out $(BUNDLE) --force
	$(PY) -m luodi verify $(BUNDLE)

clean:
	rm -rf build
