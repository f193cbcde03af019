"""What an exported graph promises its runtime: its input and output names and the step window.

One graph serves prefill and decode. Inputs: the tokens (`input_ids`, or their rows as `inputs_embeds` after
the embedding_input pass), `attention_mask` [batch, total_sequence], `position_ids` [batch, sequence] and,
unless the cache is the runtime's own state, `past_key_values.{i}.key|value`; outputs: `logits` and
`present.{i}.key|value`. A step of at most STEP_WINDOW tokens returns every position's logits (a decode step,
or one a speculative step verifies); a longer one (a prefill) only the last position's, once the
last_token_logits pass has run.
"""

INPUT_IDS = "input_ids"
INPUTS_EMBEDS = "inputs_embeds"
ATTENTION_MASK = "attention_mask"
POSITION_IDS = "position_ids"
LOGITS = "logits"
BEAM_IDX = "beam_idx"  # a stateful OpenVINO IR's input: which cached row each batch row continues
PAST_PREFIX, PRESENT_PREFIX = "past_key_values", "present"
KV_PARTS = ("key", "value")
EMBEDDING_TABLE_KEY = "luodi.embedding_table"  # graph metadata: the initializer embedding_input reads rows of
STEP_WINDOW = 8  # the longest step whose every position's logits are returned: one token plus 7 drafts


def past_names(num_layers: int) -> list[str]:
    """The graph's KV-cache inputs, layer by layer: past_key_values.{i}.key, past_key_values.{i}.value."""
    return [f"{PAST_PREFIX}.{i}.{part}" for i in range(num_layers) for part in KV_PARTS]


def present_names(num_layers: int) -> list[str]:
    """The graph's KV-cache outputs, matching past_names: present.{i}.key, present.{i}.value."""
    return [f"{PRESENT_PREFIX}.{i}.{part}" for i in range(num_layers) for part in KV_PARTS]


def kv_names(num_layers: int) -> tuple[list[str], list[str]]:
    """(past_names, present_names)."""
    return past_names(num_layers), present_names(num_layers)


def is_past_name(name: str) -> bool:
    """Whether a graph input is a KV-cache input."""
    return name.startswith(PAST_PREFIX + ".")


def is_present_name(name: str) -> bool:
    """Whether a graph output is a KV-cache output."""
    return name.startswith(PRESENT_PREFIX + ".")


def io_names(num_layers: int, embeds: bool = False, stateful: bool = False) -> tuple[list[str], list[str]]:
    """The graph's input and output names, in order; `embeds`: it takes token rows (embedding_input);
    `stateful`: the cache is the runtime's state (no KV inputs or outputs)."""
    tokens = INPUTS_EMBEDS if embeds else INPUT_IDS
    past, present = ([], []) if stateful else kv_names(num_layers)
    return [tokens, ATTENTION_MASK, POSITION_IDS, *past], [LOGITS, *present]


def embedding_table_name(proto) -> str | None:
    """The initializer a saved model's metadata names as its embedding table (an onnx ModelProto), if any."""
    return {p.key: p.value for p in proto.metadata_props}.get(EMBEDDING_TABLE_KEY)
