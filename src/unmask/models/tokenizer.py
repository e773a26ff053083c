"""A thin tokenizer wrapper over `tokenizers` (tokenizer.json) with a transformers fallback."""

from __future__ import annotations

from pathlib import Path


class Tokenizer:
    """Encode/decode without adding special tokens: templates place BOS and friends explicitly."""

    def __init__(self, backend, kind: str):
        self._backend = backend
        self._kind = kind
        self._longest: int | None = None

    @classmethod
    def from_dir(cls, path: Path) -> "Tokenizer":
        file = path / "tokenizer.json"
        if file.exists():
            from tokenizers import Tokenizer as Fast

            return cls(Fast.from_file(str(file)), "fast")
        try:
            from transformers import AutoTokenizer
        except ImportError:  # pragma: no cover - transformers is a dev dependency
            raise FileNotFoundError(f"{file}: missing (and transformers is not installed to read other formats)")
        try:
            return cls(AutoTokenizer.from_pretrained(str(path), local_files_only=True), "hf")
        except Exception as exc:
            raise FileNotFoundError(f"{file}: missing, and no other tokenizer files could be read: {exc}") from exc

    def encode(self, text: str) -> list[int]:
        if self._kind == "fast":
            return self._backend.encode(text, add_special_tokens=False).ids
        return self._backend.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int], skip_special: bool = True) -> str:
        return self._backend.decode(list(ids), skip_special_tokens=skip_special)

    def token_to_id(self, token: str) -> int | None:
        if self._kind == "fast":
            return self._backend.token_to_id(token)
        tid = self._backend.convert_tokens_to_ids(token)
        return None if tid == getattr(self._backend, "unk_token_id", None) else tid

    def longest_token_bytes(self) -> int:
        """UTF-8 length of the longest vocabulary entry as stored (at least the text it stands for:
        byte-level and SentencePiece markers spell one byte with more), computed once."""
        if self._longest is None:
            self._longest = max((len(token.encode("utf-8")) for token in self._backend.get_vocab()), default=1)
        return self._longest

    @property
    def vocab_size(self) -> int:
        if self._kind == "fast":
            return self._backend.get_vocab_size()
        return len(self._backend)
