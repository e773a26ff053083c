"""Build the bundled model's small tokenizer: whole words, single digits, LLaDA's special tokens.

A WordPiece model with an empty continuation prefix acts as a word-level vocabulary with a
character fallback: every word seen in the texts is one token (with its leading space folded
in, so spaces cost nothing between words), any other ASCII word is spelled character by
character, and the `Fuse` decoder concatenates tokens, so decoding gives the text back exactly.
Digits are always split, one token each, so numbers are copied and computed digit by digit.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from pathlib import Path
from typing import Iterable

# LLaDA's special tokens, so its chat template works unchanged; EOS doubles as padding.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|startoftext|>",
    "<|mdm_mask|>",
    "<|eot_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
)
UNK = "<|unk|>"
# A digit; a word with its leading space; a run of '#' (the '####' answer marker) or any other
# ASCII symbol, each with the spaces around it (so `25 + 97 = 122.` is 10 tokens); any other
# single character (non-ASCII ones become the unknown token, without swallowing a space).
_SYMBOLS = "".join(re.escape(c) for c in string.punctuation if c != "#")
PIECE_PATTERN = r"\d| ?[A-Za-z]+| ?#+ ?| ?[" + _SYMBOLS + r"] ?|\s|."
ALPHABET = [chr(c) for c in range(32, 127)] + ["\n", "\t"]


def pieces(text: str) -> list[str]:
    """Split text the way the tokenizer's pre-tokenizer does (used to collect the vocabulary)."""
    return re.findall(PIECE_PATTERN, text)


def build_tokenizer(out_dir: str | Path, texts: Iterable[str], min_count: int = 1, max_words: int = 1024) -> Path:
    """Write `tokenizer.json` to out_dir: specials, ASCII characters, then the texts' words by frequency."""
    from tokenizers import Regex, Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import WordPiece

    counts: Counter[str] = Counter()
    for text in texts:
        for special in SPECIAL_TOKENS:
            text = text.replace(special, "\n")
        counts.update(p for p in pieces(text) if len(p) > 1 and not p.strip().isdigit())
    vocab: dict[str, int] = {}
    for token in (*SPECIAL_TOKENS, UNK, *ALPHABET):
        vocab.setdefault(token, len(vocab))
    words = [w for w, c in counts.most_common() if c >= min_count and w not in vocab]
    for word in sorted(words[:max_words]):
        vocab[word] = len(vocab)

    tok = Tokenizer(WordPiece(vocab, unk_token=UNK, continuing_subword_prefix="", max_input_chars_per_word=10_000))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(PIECE_PATTERN), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "tokenizer.json"
    tok.save(str(path))
    return path
