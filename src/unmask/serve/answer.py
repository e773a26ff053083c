"""From generated token ids to the answer text: EOS, max_tokens and `stop` strings.

The same rules serve the final answer and the streamed prefix, so the streamed chunks
add up to the non-streamed text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Answer:
    text: str
    finish_reason: str  # "stop" (EOS/EOT or a stop string) or "length" (max_tokens reached)
    completion_tokens: int  # generated tokens before EOS, at most max_tokens


def _first_stop_id(ids: list[int], stop_ids: tuple[int, ...]) -> int | None:
    for i, tok in enumerate(ids):
        if tok in stop_ids:
            return i
    return None


def _cut_at_stop(text: str, stops: list[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def final_answer(tokenizer: Any, ids: list[int], stop_ids: tuple[int, ...], max_tokens: int, stops: list[str]) -> Answer:
    """The answer for a finished generation (`ids` is the whole generated region)."""
    first = _first_stop_id(ids, stop_ids)
    if first is not None and first < max_tokens:
        n, reason = first, "stop"
    else:
        n, reason = min(max_tokens, len(ids)), "length"
    text = tokenizer.decode(ids[:n])
    cut = _cut_at_stop(text, stops)
    if cut is not None:
        text, reason = text[:cut], "stop"
    return Answer(text, reason, n)


class PrefixText:
    """The part of a growing decoded prefix that is safe to send: it only ever grows.

    While the prefix is still open, the last token is held back (a byte-level token may be
    half a character, and detokenizers may merge it with the next), as are the characters
    that could be the start of a stop string. Decoding is incremental (a window from one token
    before the new ones, the way vLLM's detokenizer does it), so a whole stream costs
    O(answer length) detokenizer work rather than a full decode per step.
    """

    def __init__(self, tokenizer: Any, stop_ids: tuple[int, ...], max_tokens: int, stops: list[str]):
        self.tokenizer, self.stop_ids, self.max_tokens, self.stops = tokenizer, stop_ids, max_tokens, stops
        self.sent = ""
        self._hold = max((len(s) for s in stops), default=1) - 1
        self._ids: list[int] = []  # the tokens decoded so far; their text is self._text
        self._text = ""
        self._window = 0  # where the next decoding window starts (one token of context)
        self._scanned = 0  # prefix tokens already checked for a stop id
        self._first_stop: int | None = None

    def update(self, prefix: list[int]) -> str:
        """New text to send for this prefix (possibly empty)."""
        self._scan(prefix)
        first = self._first_stop
        closed = first is not None or len(prefix) >= self.max_tokens
        n = min(len(prefix), self.max_tokens, first if first is not None else len(prefix))
        text = self._decode(prefix, n if closed else max(0, n - 1), closed)
        cut = _cut_at_stop(text, self.stops)
        if cut is not None:
            text = text[:cut]
        elif not closed and self._hold:
            text = text[: max(0, len(text) - self._hold)]
        return self._advance(text)

    def finish(self, final_text: str) -> str | None:
        """The rest of the final text, or None when it does not extend what was sent (a retried
        sampled request may diverge)."""
        if not final_text.startswith(self.sent):
            return None
        return self._advance(final_text)

    def _scan(self, prefix: list[int]) -> None:
        if self._first_stop is None:
            hit = _first_stop_id(prefix[self._scanned :], self.stop_ids)
            self._first_stop = None if hit is None else self._scanned + hit
            self._scanned = len(prefix)

    def _decode(self, prefix: list[int], n: int, closed: bool) -> str:
        """Text of prefix[:n], decoding only the tokens added since the last call."""
        done = len(self._ids)
        if prefix[:done] != self._ids:  # not an extension (never expected): start over
            self._ids, self._text, self._window = [], "", 0
            done = 0
        if n <= done:
            return self._text
        before = self.tokenizer.decode(self._ids[self._window :])
        after = self.tokenizer.decode(prefix[self._window : n])
        if not closed and after.endswith("\ufffd"):
            return self._text  # half a character: wait for the token that completes it
        if after.startswith(before):
            self._text += after[len(before) :]
        else:  # the new tokens changed how the window reads: decode the whole prefix once
            self._text = self.tokenizer.decode(prefix[:n])
        self._window, self._ids = done, list(prefix[:n])
        return self._text

    def _advance(self, text: str) -> str:
        if len(text) <= len(self.sent) or not text.startswith(self.sent):
            return ""
        delta, self.sent = text[len(self.sent) :], text
        return delta
