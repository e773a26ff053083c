"""The FastAPI application: OpenAI routes over the batcher.

Bodies are parsed here rather than by FastAPI's validation so that every bad input,
malformed JSON included, gets an OpenAI-style error body with a 4xx status; anything unforeseen
is a JSON 500 with a generic message (the details go to the server log), and the connection
stays open either way. A request whose client disconnects is cancelled in the batcher.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .answer import PrefixText, final_answer
from .batcher import Job, Outcome, QueueFull, RequestBatcher
from .continuous import ContinuousBatcher
from .prepare import Prepared, ServeSettings, prepare
from .schemas import APIError, ChatRequest, CompletionRequest, decode_body, parse
from .streaming import DONE, JobEvents, Responder, sse

log = logging.getLogger("unmask.serve")
INTERNAL_ERROR = "the server failed to answer this request (an internal error; the server log has the details)"
CLIENT_CLOSED = 499  # the status nginx logs for a client that left; nobody reads it


def failure(exc: BaseException) -> APIError:
    """A failed generation as an API error: option problems are the client's, the rest ours."""
    if isinstance(exc, QueueFull):
        return APIError(503, f"the server is shutting down: {exc}", type="server_error", code="unavailable")
    if isinstance(exc, ValueError):
        return APIError(400, str(exc))
    return APIError(500, INTERNAL_ERROR, type="server_error")


class UnexpectedErrors:
    """ASGI middleware: an exception a route lets escape becomes a JSON 500.

    Starlette's last-resort handler answers in plain text and re-raises, after which the HTTP
    server closes the connection; here the error is logged and answered, and the connection lives on.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except ClientDisconnect:
            return  # the client left while sending its body: nobody to answer
        except Exception:
            log.exception("unexpected error in %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise  # part of a response went out: only closing the connection can end it
            body = APIError(500, INTERNAL_ERROR, type="server_error").body()
            await JSONResponse(body, status_code=500)(scope, receive, send)


async def _disconnected(http: Request) -> None:
    """Return once the client has disconnected (the request body has been read already)."""
    while (await http.receive())["type"] != "http.disconnect":
        pass


def create_app(settings: ServeSettings, batcher: RequestBatcher | ContinuousBatcher) -> FastAPI:
    """The app; the batcher's workers run for the app's lifetime."""

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        batcher.start()
        try:
            yield
        finally:
            batcher.close()

    from .. import __version__

    app = FastAPI(title="unmask", version=__version__, lifespan=lifespan)
    app.add_middleware(UnexpectedErrors)
    started = int(time.time())
    model = settings.model
    card = {"id": settings.name, "object": "model", "created": started, "owned_by": "unmask"}

    @app.exception_handler(APIError)
    async def api_error(_: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return JSONResponse(APIError(exc.status_code, str(exc.detail), type=kind).body(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(APIError(400, f"invalid request: {exc.errors()[:1]}").body(), status_code=400)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": settings.name, **batcher.stats()}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [card]}

    @app.get("/v1/models/{model_id:path}")
    async def model_card(model_id: str) -> dict:
        settings.check_model(model_id)
        return card

    @app.post("/v1/chat/completions")
    async def chat_completions(http: Request):
        return await complete(http, ChatRequest, chat=True)

    @app.post("/v1/completions")
    async def completions(http: Request):
        return await complete(http, CompletionRequest, chat=False)

    async def complete(http: Request, kind: type, chat: bool):
        body = decode_body(await http.body())
        prepared = await run_in_threadpool(prepare, settings, parse(kind, body))
        events = JobEvents(asyncio.get_running_loop())
        job = Job(
            input_ids=prepared.input_ids, cache=prepared.cache, options=prepared.options, key=prepared.key,
            group=prepared.group,
            on_done=events.done, on_prefix=events.prefix if prepared.stream else None,
            images=prepared.images, prompt_tokens=prepared.prompt_tokens,
        )
        try:
            batcher.submit(job)
        except QueueFull as exc:
            raise APIError(
                503, f"the server is at capacity ({exc}); retry later", type="server_error", code="queue_full"
            ) from None
        responder = Responder(chat, settings.name)
        if prepared.stream:
            return StreamingResponse(
                stream(job, events, prepared, responder),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        outcome = await answer_or_leave(http, job, events)
        if outcome is None:
            return Response(status_code=CLIENT_CLOSED)
        if isinstance(outcome, BaseException):
            raise failure(outcome)
        answer = final_answer(model.tokenizer, outcome.token_ids, model.special.stop_ids, prepared.max_tokens, prepared.stops)
        usage = Responder.usage(prepared.prompt_tokens, answer)
        return JSONResponse(responder.response(answer, usage, metrics(outcome, prepared)))

    async def answer_or_leave(http: Request, job: Job, events: JobEvents) -> Outcome | BaseException | None:
        """The job's outcome, or None (the job cancelled) if the client disconnects first."""
        done = asyncio.ensure_future(events.outcome())
        gone = asyncio.ensure_future(_disconnected(http))
        try:
            await asyncio.wait({done, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            answered = done.done()
            if not answered:
                done.cancel()
                batcher.cancel(job)  # the client left (or the server is stopping)
        return done.result() if answered else None

    async def stream(job: Job, events: JobEvents, prepared: Prepared, responder: Responder) -> AsyncIterator[str]:
        text = PrefixText(model.tokenizer, model.special.stop_ids, prepared.max_tokens, prepared.stops)
        try:
            yield sse(responder.chunk(first=True))
            while True:
                event, payload = await events.next()
                if event == "prefix":
                    delta = text.update(payload)
                    if delta:
                        yield sse(responder.chunk(delta))
                    continue
                if isinstance(payload, BaseException):
                    yield sse(failure(payload).body())
                    break
                answer = final_answer(
                    model.tokenizer, payload.token_ids, model.special.stop_ids, prepared.max_tokens, prepared.stops
                )
                rest = text.finish(answer.text)
                if rest is None:
                    message = "the final answer does not extend the streamed text (the request was retried after a batch failure)"
                    yield sse(APIError(500, message, type="server_error").body())
                    break
                if rest:
                    yield sse(responder.chunk(rest))
                last = responder.chunk(finish_reason=answer.finish_reason)
                last["unmask"] = metrics(payload, prepared)
                yield sse(last)
                if prepared.include_usage:
                    yield sse(responder.usage_chunk(Responder.usage(prepared.prompt_tokens, answer)))
                break
            yield DONE
        except Exception:  # noqa: BLE001 - the response has started: end the stream with an error event
            log.exception("unexpected error while streaming")
            yield sse(APIError(500, INTERNAL_ERROR, type="server_error").body())
            yield DONE
        finally:
            batcher.cancel(job)  # the client left early: drop the job (a no-op once it has finished)

    return app


def metrics(outcome: Outcome, prepared: Prepared) -> dict:
    return Responder.metrics(outcome, prepared.options["gen_length"], prepared.cache)
