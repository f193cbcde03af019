#!/usr/bin/env bash
# On a machine with an NVIDIA GPU, CUDA-enabled PyTorch and TensorRT (or TensorRT for RTX), which CI does not
# have: build engines for this GPU for a tiny model and SmolLM2-135M, check their greedy tokens against
# transformers fp32 (`luodi greedy-check`) and time them (`luodi bench`). Exits non-zero on any difference.
#   bash scripts/gpu_check.sh [PYTHON]      (default: .venv/bin/python, as `make setup` makes it)
# tests/test_cli_measure.py checks that every luodi command below parses.
set -euo pipefail
PY=${1:-.venv/bin/python}
OUT=${OUT:-build/gpu-check}
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible to torch')"
prompts=$(mktemp)
trap 'rm -f "$prompts"' EXIT
printf '%s\n' "Explain what a compiler does in two sentences." "Name three rivers in Europe." \
  "Write a haiku about the sea." > "$prompts"
for model in tiny-llama smollm2-135m; do
  "$PY" -m luodi export "$model" --target trt --out "$OUT/$model" --force
  "$PY" -m luodi greedy-check "$OUT/$model" --prompts "$prompts" --max-new-tokens 32 --backend tensorrt
  "$PY" -m luodi bench "$OUT/$model" --backend tensorrt --prompt "Name three rivers in Europe." \
    --new-tokens 64 --ignore-eos --repeat 3
done
echo "gpu_check: engines run and match transformers' greedy tokens"
