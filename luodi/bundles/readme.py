"""The README.md that travels inside a bundle: what the model is, what the device needs, how to run it."""

from ..contract import RUNTIMES, Manifest


def _mb(value) -> str:
    return f"{value / 1e6:,.0f} MB" if isinstance(value, (int, float)) else "unknown"


def device_readme(manifest: Manifest, requires: dict[str, str], bundle_name: str, chat: bool) -> str:
    """Markdown for the device: the model, memory needs, the runtime to install (`requires`: the minimum
    versions), and the three commands (a chat prompt when the model has a chat template, else a plain one: a
    base model continues text)."""
    memory = manifest.memory
    activations = ((memory.activations if memory else None) or {}).get("prefill_max_context", {})
    extra = RUNTIMES[manifest.backend].extra
    needs = ", ".join(f"{k} >= {v}" for k, v in requires.items())
    source = manifest.source.name if manifest.source else "model"
    tokenizer = "tokenizer and chat template" if chat else "tokenizer (a base model: no chat template)"
    cli_prompt = '--chat --prompt "Hello!"' if chat else '--prompt "Once upon a time"'
    stream_prompt = '[{"role": "user", "content": "Hello!"}]' if chat else '"The capital of France is"'
    return f"""# {source} ({manifest.backend}, {manifest.precision})

A luodi deployment bundle: the model for the `{manifest.backend}` runtime, its {tokenizer}, generation
defaults and `manifest.json` (sha256 of every file, required runtime versions, IO signature, memory needs).
Nothing here is pickled; nothing needs PyTorch, a compiler or a network.

## Needs
- Python 3.11+ and {needs}
- memory: weights {_mb(memory and memory.weight_bytes)}, KV cache at the max context of {manifest.max_context}
  positions {_mb(memory and memory.kv_bytes_at_max_context)}, planned activation peak for a max-context
  prompt {_mb(activations.get('planned_peak_bytes'))}

## Run
```
pip install 'luodi[{extra}]'          # or the luodi wheel you were given: pip install 'luodi-*.whl[{extra}]'
luodi verify {bundle_name}            # manifest, every checksum, runtime versions, every path
luodi generate {bundle_name} {cli_prompt} --max-new-tokens 64
```
From Python:
```
import luodi
lm = luodi.load("{bundle_name}")     # verifies, then unpacks once into ~/.cache/luodi/bundles (read-only)
print(lm.generate("Once upon a time", max_new_tokens=64).text)
for piece in lm.stream({stream_prompt}, max_new_tokens=64):
    print(piece, end="", flush=True)
```
`LUODI_CACHE` moves the cache (bundles unpack into its `bundles/` folder);
`luodi.load(..., verify=False)` skips the checksums (not the path checks) for trusted hot paths.
"""
