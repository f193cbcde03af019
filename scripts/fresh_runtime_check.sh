#!/usr/bin/env bash
# Issue 8's must-show: in a fresh virtual environment holding only `luodi[runtime-ort]` (numpy, onnxruntime,
# tokenizers, jinja2: no torch, transformers or onnx), luodi.load(BUNDLE) gives the export folder's greedy ids
# (a chat prompt, 64 new tokens).
# usage: scripts/fresh_runtime_check.sh BUNDLE.tar EXPORT_DIR ["prompt"]   (run from the repository root)
set -euo pipefail
BUNDLE=$(realpath "${1:?bundle archive}"); EXPORT=$(realpath "${2:?export folder it was made from}")
PROMPT=${3:-Summarise in one sentence: the river rose overnight and closed the old bridge.}
VENV=${VENV:-$(mktemp -d)/runtime-venv}
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q "$PWD[runtime-ort]"
echo "fresh venv $VENV holds: $("$VENV/bin/pip" list --format=freeze | tr '\n' ' ')"
run='import json, sys, time, luodi
t = time.perf_counter(); lm = luodi.load(sys.argv[1]); load_s = time.perf_counter() - t
result = lm.generate([{"role": "user", "content": sys.argv[2]}], max_new_tokens=64)
heavy = sorted(m for m in ("torch", "transformers", "onnx", "onnx_ir", "onnxscript") if sys.modules.get(m))
print(json.dumps({"ids": result.token_ids, "text": result.text, "load_s": round(load_s, 2), "heavy": heavy}))'
cd "$(mktemp -d)"   # not the repository: the venv's installed luodi is the one imported
FRESH=$("$VENV/bin/python" -c "import sys; sys.modules['torch'] = None; exec(sys.argv.pop(1))" "$run" "$BUNDLE" "$PROMPT")
"$VENV/bin/python" -c "import torch" 2>/dev/null && { echo "torch is importable in the fresh venv"; exit 1; }
REF=$("$OLDPWD/.venv/bin/python" -c "import sys; exec(sys.argv.pop(1))" "$run" "$EXPORT" "$PROMPT")
echo "bundle (fresh venv): $FRESH"
echo "export folder (dev): $REF"
python3 -c "import json,sys; a,b=(json.loads(x) for x in sys.argv[1:]); assert a['ids']==b['ids'] and not a['heavy'], 'MISMATCH'; print('identical greedy ids:', len(a['ids']), 'tokens')" "$FRESH" "$REF"
