"""embedding_int8's table quantization, a block of tokens at a time: the same codes and scales as the whole table
at once, whichever axis the tokens run along and wherever the blocks fall (a real vocabulary spans many blocks;
the tiny models' fit in one)."""

import numpy as np
import pytest

from luodi.passes import embedding_int8


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_blocks_of_tokens_give_the_whole_tables_codes(monkeypatch, axis, dtype):
    rng = np.random.default_rng(axis)
    table = (rng.standard_normal((50, 16)) * rng.uniform(0.01, 3, (50, 1))).astype(dtype)
    table[7] = 0  # a token whose vector is all zeros keeps scale 1
    table = table if axis == 0 else np.ascontiguousarray(table.T)
    whole = embedding_int8._quantize(table, axis)  # 50 tokens: one block
    monkeypatch.setattr(embedding_int8, "TOKENS_PER_BLOCK", 7)  # 8 blocks, the last one short
    blocked = embedding_int8._quantize(table, axis)
    for a, b in zip(whole, blocked):
        assert a.shape == b.shape and a.dtype == b.dtype and a.flags.c_contiguous and np.array_equal(a, b)
    codes, scales = blocked
    assert codes.shape == table.shape and scales.size == 50 and np.abs(codes).max() == 127
    restored = codes.astype(np.float32) * scales
    assert np.abs(restored - table.astype(np.float32)).max() <= scales.max() / 2 + 1e-6
