"""Incremental detokenization: text pieces that never split a UTF-8 character.

Each step decodes only a short window of recent tokens (a prefix/read offset pair), so the cost per token
stays constant; a piece is held back while it ends in an incomplete character (U+FFFD).
"""


class IncrementalDecoder:
    """Turns a growing list of token ids into text pieces whose concatenation is the full decoded text."""

    def __init__(self, decode):
        self._decode = decode
        self.tokens: list[int] = []
        self._prefix = 0
        self._read = 0
        self.text = ""

    def push(self, token_id: int) -> str:
        """Add one token; return the new complete text it produced ('' if it is still incomplete)."""
        self.tokens.append(int(token_id))
        prefix_text = self._decode(self.tokens[self._prefix:self._read])
        new_text = self._decode(self.tokens[self._prefix:])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            piece = new_text[len(prefix_text):]
            self._prefix, self._read = self._read, len(self.tokens)
            self.text += piece
            return piece
        return ""

    def flush(self) -> str:
        """Whatever text is still held back (an incomplete character at the very end)."""
        full = self._decode(self.tokens)
        piece = full[len(self.text):] if full.startswith(self.text) else ""
        self.text += piece
        return piece
