"""`luodi greedy-check`: an export's greedy tokens against transformers' fp32 `generate` on the model it came
from, prompt by prompt. The end-to-end check for a runtime the test suite cannot run here (a TensorRT engine on
a GPU machine, scripts/gpu_check.sh), and for held-out prompts on any export. `num_beams` checks beam search
against transformers' (same length penalty and early stopping defaults); `joined` runs every prompt at once
through the scheduler, each joining `JOIN_EVERY` steps after the one before, so rows of different lengths
share decode steps and a late row takes positions an early one has freed: each must still give its ids."""

JOIN_EVERY = 5  # decode steps between one prompt's arrival and the next's in a joined check
JOINED_ROWS = 8  # rows a joined check runs at once (later prompts wait for a free row)


def reference_greedy(model, tok, prompt: str, chat: bool, max_new_tokens: int,
                     num_beams: int = 1) -> tuple[list[int], list[int]]:
    """(prompt ids, new ids) of transformers' greedy (or `num_beams` beam search) generate, the prompt encoded
    by its own tokenizer."""
    import torch

    if chat:
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                      tokenize=True, return_dict=True)["input_ids"]
    else:
        ids = tok(prompt)["input_ids"]
    ids = torch.tensor([list(ids)])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, num_beams=num_beams,
                             length_penalty=1.0, early_stopping=False)  # luodi's defaults, whatever config.json says
    return ids[0].tolist(), out[0, ids.shape[1]:].tolist()


def joined_ids(lm, prompt_ids: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """Greedy ids of every prompt run together through lm's scheduler, prompt i arriving JOIN_EVERY * i decode
    steps after the first (one row each, at most JOINED_ROWS or the backend's batch limit at once, rows joining
    and leaving between steps)."""
    from .runtimes.sampling import GenerationConfig

    limit = lm.backend.max_batch or JOINED_ROWS
    scheduler = lm.scheduler(max_rows=min(len(prompt_ids), JOINED_ROWS, limit))
    sequences, waiting = [], list(prompt_ids)
    while waiting or scheduler.busy:
        if waiting and scheduler.steps >= JOIN_EVERY * len(sequences):
            sequences += scheduler.submit(waiting.pop(0), GenerationConfig(max_new_tokens=max_new_tokens))
        scheduler.step()
    return [s.tokens for s in sequences]


def greedy_check(lm, source: str, prompts: list[str], max_new_tokens: int, chat: bool,
                 logits: bool = False, num_beams: int = 1, joined: bool = False) -> list[dict]:
    """Per prompt, whether the loaded export `lm` and transformers on `source` (a model argument: registry name,
    folder or .gguf) give identical prompt ids and greedy ids, and where the new ids first differ; with `logits`
    also the max |logit difference| over the prefill and `max_new_tokens` steps fed transformers' greedy
    tokens (targets.parity.compare_backends), the fidelity number a long prompt needs beside the ids. With
    `num_beams` both run beam search; with `joined` the export's ids come from joined_ids."""
    from .errors import LuodiError
    from .loaders import resolve
    from .loaders.hf_folder import load_reference, load_reference_tokenizer
    from .runtimes.torch_ref import TorchReferenceBackend
    from .targets.parity import compare_backends

    if joined and num_beams != 1:
        raise LuodiError("a joined check runs greedy rows; beam search is checked one prompt at a time")
    # every prompt encoded first: chat on a model without a template fails here, before transformers loads
    prompt_ids = [lm.tokenizer.encode_chat([{"role": "user", "content": p}]) if chat else lm.tokenizer.encode(p)
                  for p in prompts]
    hf_dir = resolve(source).hf_dir
    model, tok = load_reference(hf_dir), load_reference_tokenizer(hf_dir)
    together = joined_ids(lm, prompt_ids, max_new_tokens) if joined else None
    rows = []
    for row, (prompt, ids) in enumerate(zip(prompts, prompt_ids)):
        got = together[row] if joined else lm.generate(ids, max_new_tokens=max_new_tokens,
                                                       num_beams=num_beams).token_ids
        want_prompt, want = reference_greedy(model, tok, prompt, chat, max_new_tokens, num_beams)
        differ = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b),
                      None if len(got) == len(want) else min(len(got), len(want)))
        rows.append({"prompt": prompt, "prompt_ids_identical": ids == want_prompt, "tokens": len(got),
                     "reference_tokens": len(want), "first_difference": differ,
                     "identical": ids == want_prompt and differ is None})
        if logits:
            reference = TorchReferenceBackend(model, lm.backend.max_context)
            rows[-1]["max_abs_logit_diff"] = compare_backends(lm.backend, reference, ids, max_new_tokens)[
                "max_abs_diff"]
    return rows


def format_greedy_check(rows: list[dict]) -> str:
    """One line per prompt, then how many were identical."""
    lines = [f"{'identical' if r['identical'] else 'DIFFERENT'}  {r['tokens']:3d} vs {r['reference_tokens']:3d} "
             f"tokens{'' if r['prompt_ids_identical'] else ' (prompt ids differ)'}"
             f"{f'  max |logit diff| {d:.2e}' if (d := r.get('max_abs_logit_diff')) is not None else ''}"
             f"  {r['prompt'][:60]!r}" for r in rows]
    same = sum(r["identical"] for r in rows)
    lines.append(f"{same}/{len(rows)} prompts give identical greedy token ids")
    if diffs := [r["max_abs_logit_diff"] for r in rows if "max_abs_logit_diff" in r]:
        lines.append(f"max |logit diff| over all prompts {max(diffs):.2e}")
    return "\n".join(lines)
