# luodi: `make export TARGET=ort` sets up, exports the default model and prints a generation; `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TARGET ?= ort
MODEL  ?= smollm2-135m
OUT    ?= build/$(MODEL)-$(TARGET)
PROMPT ?= What is the capital of France?
THREADS ?= 2

.PHONY: setup export test bench clean

setup: $(VENV)/.installed

# The editable install brings every dependency (torch pinned to the CPU build, transformers pinned).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

export: setup
	$(PY) -m luodi export $(MODEL) --target $(TARGET) --out $(OUT)
	$(PY) -m luodi generate $(OUT) --chat --prompt "$(PROMPT)" --max-new-tokens 64

$(OUT)/manifest.json: | setup
	$(PY) -m luodi export $(MODEL) --target $(TARGET) --out $(OUT)

# pytest exits 5 when it collected no test: that is a failure here, not a pass.
test: setup
	$(PY) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "make test: no tests were collected" >&2; exit 1; fi; exit $$rc

# W1-like (chat prompt, 128 new tokens) and W2-like (512-token prompt, 32 new tokens); medians of 5 runs.
bench: $(OUT)/manifest.json
	$(PY) -m luodi bench $(OUT) --chat --prompt "$(PROMPT)" --new-tokens 128 --ignore-eos --repeat 5 --threads $(THREADS)
	$(PY) -m luodi bench $(OUT) --prompt-tokens 512 --new-tokens 32 --ignore-eos --repeat 5 --threads $(THREADS)

clean:
	rm -rf build
