"""OpenAI response bodies, stream chunks in server-sent-event framing, and the bridge that
carries a job's events from its worker thread to the request's event loop."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from .answer import Answer
from .batcher import Outcome


class JobEvents:
    """Thread-safe hand-off of ("prefix", ids) and ("done", outcome | exception) events."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()

    def _put(self, event: tuple[str, Any]) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:  # the loop is gone (server shutting down): nobody is listening
            pass

    def prefix(self, ids: list[int]) -> None:
        self._put(("prefix", ids))

    def done(self, outcome: Outcome | BaseException) -> None:
        self._put(("done", outcome))

    async def outcome(self) -> Outcome | BaseException:
        """Wait for the "done" event, skipping prefixes."""
        event, payload = await self.next()
        while event != "done":
            event, payload = await self.next()
        return payload

    async def next(self) -> tuple[str, Any]:
        """The next event; of several prefixes waiting only the newest matters."""
        event = await self.queue.get()
        while event[0] == "prefix" and not self.queue.empty():
            event = self.queue.get_nowait()
        return event


class Responder:
    """Builds the OpenAI bodies of one request (chat or text completion)."""

    def __init__(self, chat: bool, model: str):
        self.chat, self.model = chat, model
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())

    def _head(self, object_: str) -> dict:
        return {"id": self.id, "object": object_, "created": self.created, "model": self.model}

    @staticmethod
    def usage(prompt_tokens: int, answer: Answer) -> dict:
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": answer.completion_tokens,
            "total_tokens": prompt_tokens + answer.completion_tokens,
        }

    @staticmethod
    def metrics(outcome: Outcome, gen_length: int, cache: dict | None) -> dict:
        return {
            "nfe": outcome.nfe,
            "seconds": round(outcome.seconds, 6),
            "queue_seconds": round(outcome.queue_seconds, 6),
            "batch_size": outcome.batch_size,
            "gen_length": gen_length,
            "cache": None if cache is None else cache.get("name"),
        }

    def response(self, answer: Answer, usage: dict, metrics: dict) -> dict:
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": answer.text}, "logprobs": None}
            body = self._head("chat.completion")
        else:
            choice = {"index": 0, "text": answer.text, "logprobs": None}
            body = self._head("text_completion")
        choice["finish_reason"] = answer.finish_reason
        return {**body, "choices": [choice], "usage": usage, "unmask": metrics}

    def chunk(self, text: str | None = None, finish_reason: str | None = None, first: bool = False) -> dict:
        if self.chat:
            delta: dict = {"role": "assistant", "content": text or ""} if first else ({} if text is None else {"content": text})
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return {**self._head("chat.completion.chunk"), "choices": [choice]}
        choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        return {**self._head("text_completion"), "choices": [choice]}

    def usage_chunk(self, usage: dict) -> dict:
        object_ = "chat.completion.chunk" if self.chat else "text_completion"
        return {**self._head(object_), "choices": [], "usage": usage}


def sse(data: dict | str) -> str:
    """One server-sent event (`data: ...` and a blank line)."""
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {payload}\n\n"


DONE = sse("[DONE]")
