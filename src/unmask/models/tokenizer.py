"""A thin tokenizer wrapper over `tokenizers` (tokenizer.json) with a transformers fallback."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import LoadedModel

# Files from which transformers can build a tokenizer when tokenizer.json is absent.
OTHER_TOKENIZER_FILES = ("tokenizer_config.json", "vocab.json", "merges.txt", "tokenizer.model", "vocab.txt",
                         "special_tokens_map.json", "tiktoken.model")


class Tokenizer:
    """Encode/decode without adding special tokens: templates place BOS and friends explicitly."""

    def __init__(self, backend, kind: str):
        self._backend = backend
        self._kind = kind
        self._longest: int | None = None

    @classmethod
    def from_dir(cls, path: Path) -> "Tokenizer":
        """tokenizer.json through `tokenizers`; other tokenizer files through transformers.

        Errors name the file and stand alone (no chained traceback from inside the libraries)."""
        file = path / "tokenizer.json"
        if file.exists():
            from tokenizers import Tokenizer as Fast

            try:
                return cls(Fast.from_file(str(file)), "fast")
            except Exception as exc:  # tokenizers' parse errors do not name the file
                raise ValueError(f"{file}: not a readable tokenizer file ({exc})") from None
        others = sorted(p.name for p in path.iterdir() if p.name in OTHER_TOKENIZER_FILES)
        if not others:
            raise FileNotFoundError(
                f"{file}: missing (and no other tokenizer files such as tokenizer_config.json in {path})"
            ) from None
        try:
            from transformers import AutoTokenizer
            from transformers.utils import logging as hf_logging
        except ImportError:  # pragma: no cover - transformers is a dev dependency
            raise FileNotFoundError(f"{file}: missing (and transformers is not installed to read {others})") from None
        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # its warnings would print before our error
        try:
            return cls(AutoTokenizer.from_pretrained(str(path), local_files_only=True), "hf")
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise FileNotFoundError(f"{file}: missing, and transformers could not read {others}: {reason}") from None
        finally:
            hf_logging.set_verbosity(level)

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


def encode_prompts(model: LoadedModel, prompts: list[str], chat: bool) -> list[list[int]]:
    """Token ids of text prompts: through the model's chat template when `chat` and it has one,
    else the text after BOS (when the model has one)."""
    out = []
    for text in prompts:
        if chat and model.chat_template:
            out.append(model.tokenizer.encode(model.chat_template.format(content=text)))
        else:
            bos = [model.special.bos] if model.special.bos is not None else []
            out.append(bos + model.tokenizer.encode(text))
    return out
