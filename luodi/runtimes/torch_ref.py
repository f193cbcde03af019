"""PyTorch reference backend: the transformers model itself, with its own DynamicCache.

It is what exported graphs are checked against, driven by the same decode loop as every other backend.
"""

import numpy as np

from .base import Backend, KVState
from ..contract.graph import STEP_WINDOW


class TorchReferenceBackend(Backend):
    """Runs a transformers causal LM (fp32, eval) step by step."""

    name = "torch"

    def __init__(self, hf_model, max_context: int):
        self.model = hf_model
        self.max_context = max_context
        self.vocab_size = hf_model.config.vocab_size
        self.logits_window = STEP_WINDOW
        self.weight_bytes = sum(t.numel() * t.element_size() for t in hf_model.parameters())

    def forward_window(self, state: KVState, input_ids, attention_mask, position_ids) -> np.ndarray:
        import torch
        from transformers import DynamicCache

        if state.cache is None:
            state.cache = DynamicCache(config=self.model.config)
        with torch.inference_mode():
            out = self.model(input_ids=torch.from_numpy(np.asarray(input_ids, dtype=np.int64)),
                             attention_mask=torch.from_numpy(np.asarray(attention_mask, dtype=np.int64)),
                             position_ids=torch.from_numpy(np.asarray(position_ids, dtype=np.int64)),
                             cache=state.cache, use_cache=True,
                             logits_to_keep=self.kept_rows(input_ids.shape[1]))
        state.past_length += input_ids.shape[1]
        return out.logits.float().numpy()

    def _truncate(self, state: KVState, past_length: int) -> None:
        state.cache.crop(past_length - state.past_length)  # transformers 5 takes minus the tokens to drop
