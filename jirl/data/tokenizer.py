"""Byte-level tokenizer: UTF-8 bytes shifted past three special ids."""

from collections.abc import Iterable


class ByteTokenizer:
    """Maps text to UTF-8 byte ids; byte b is id b + 3.

    Ids 0, 1, 2 are pad, BOS and EOS, so `vocab_size` is 256 + 3 = 259.
    """

    pad_id = 0
    bos_id = 1
    eos_id = 2
    num_special = 3
    vocab_size = 256 + num_special

    def encode(self, text: str) -> list[int]:
        """UTF-8 bytes of `text` as ids, without special tokens."""
        return [b + self.num_special for b in text.encode("utf-8")]

    def decode(self, ids: Iterable[int]) -> str:
        """Text up to the first EOS; pad and BOS are skipped, bad UTF-8 replaced."""
        data = bytearray()
        for i in ids:
            i = int(i)
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"Token id {i} is outside the accepted range [0, {self.vocab_size}).")
            if i == self.eos_id:
                break
            if i >= self.num_special:
                data.append(i - self.num_special)
        return data.decode("utf-8", errors="replace")
