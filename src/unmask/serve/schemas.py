"""Request bodies of the OpenAI API subset unmask serves, and OpenAI-style error bodies.

Unknown fields are rejected rather than ignored; standard fields unmask cannot honour are
accepted only at their neutral value (e.g. `presence_penalty: 0`), so a client never gets an
answer computed under settings it did not ask for. Types are strict (`"stream": "yes"` is not a
boolean) and numbers keep to the OpenAI API's ranges (temperature 0..2, top_p 0..1, seed an int64).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class APIError(Exception):
    """An error the server answers with an OpenAI-style body: {"error": {message, type, param, code}}."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ):
        message, param = _printable(message), None if param is None else _printable(param)
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _printable(text: str) -> str:
    """Text that encodes as UTF-8: lone surrogates (valid in JSON, not in Unicode) are escaped."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


MAX_DEPTH = 32  # OpenAI bodies nest a few levels; deeper ones are refused before validation


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def decode_body(raw: bytes) -> Any:
    """The JSON body, or a 400: malformed, non-standard (NaN, Infinity), nested deeper than
    MAX_DEPTH, or holding text that is not valid Unicode (a lone surrogate such as "\\ud800")."""
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        raise APIError(400, f"the JSON body is nested too deeply (at most {MAX_DEPTH} levels)", code="invalid_json") from None
    except ValueError as exc:
        raise APIError(400, f"malformed JSON body: {exc}", code="invalid_json") from None
    _check_tree(body)
    return body


def _check_tree(body: Any) -> None:
    """Walk the decoded body without recursion: depth, and strings that cannot be encoded."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(body, ())]
    while stack:
        value, path = stack.pop()
        if len(path) >= MAX_DEPTH:
            raise APIError(400, f"the JSON body is nested too deeply (at most {MAX_DEPTH} levels)", code="invalid_json")
        if isinstance(value, str):
            _check_text(value, path)
        elif isinstance(value, dict):
            for key, item in value.items():
                _check_text(key, path, key=True)
                stack.append((item, (*path, key)))
        elif isinstance(value, list):
            stack.extend((item, (*path, str(i))) for i, item in enumerate(value))


def _check_text(text: str, path: tuple[str, ...], key: bool = False) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        where = ".".join(path)
        what = "a field name" + (f" in '{where}'" if where else "") if key else (f"'{where}'" if where else "the body")
        raise APIError(
            400, f"{what} contains a lone surrogate (\\ud800-\\udfff), which is not valid Unicode text",
            param=path[0] if path else None,
        ) from None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ImageURL(_Strict):
    url: str  # a base64 data URL (data:image/png;base64,...); nothing is ever fetched
    detail: Literal["auto", "low", "high"] | None = None  # accepted; LLaDA-V's anyres tiling is fixed


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: ImageURL


IMAGE_MARK = "<image>"  # where an image part stands in the message text (unmask.vision.prompt.IMAGE_TEXT)


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart | ImagePart]

    def text(self) -> str:
        """The content as text; each image part becomes `<image>` on its own line, in order."""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text if isinstance(part, TextPart) else IMAGE_MARK for part in self.content)

    def image_urls(self) -> list[str]:
        if isinstance(self.content, str):
            return []
        return [part.image_url.url for part in self.content if isinstance(part, ImagePart)]


class StreamOptions(_Strict):
    include_usage: bool = False


class _Common(_Strict):
    """Fields shared by /v1/chat/completions and /v1/completions."""

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    n: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    unmask: dict[str, Any] | None = None  # dLLM settings: cache + generation.* keys (extra_body={"unmask": {...}})
    user: str | None = None  # an end-user id; it does not change the answer
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | int | None = None

    def stop_strings(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if any(s == "" for s in stops):
            raise APIError(400, "'stop' strings must be non-empty", param="stop")
        return stops


class ChatRequest(_Common):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None


class CompletionRequest(_Common):
    prompt: str | list[int] | list[str]
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = None


# Standard fields unmask does not implement, with the values (besides null) that mean "off".
NEUTRAL: dict[str, tuple] = {
    "presence_penalty": (0,),
    "frequency_penalty": (0,),
    "logit_bias": ({},),
    "logprobs": (False, 0),
    "top_logprobs": (0,),
    "response_format": ({"type": "text"},),
    "tools": ([],),
    "tool_choice": ("none",),
    "parallel_tool_calls": (True, False),  # moot without tools
    "echo": (False,),
    "suffix": (),
    "best_of": (1,),
}


def check_neutral(request: _Common) -> None:
    """Reject standard options unmask would otherwise have to ignore."""
    for name, allowed in NEUTRAL.items():
        value = getattr(request, name, None)
        if value is not None and not any(value == ok for ok in allowed):
            raise APIError(400, f"'{name}'={value!r} is not supported by unmask serve", param=name, code="unsupported_parameter")
    if request.n not in (None, 1):
        raise APIError(400, f"n={request.n}: unmask serve returns one choice per request (n=1)", param="n")


_UNION_TAGS = {"str", "int", "float", "bool", "list", "dict"}


def parse(kind: type[_Common], body: Any) -> _Common:
    """Validate a decoded JSON body; the first problem becomes a 400 naming the field."""
    if not isinstance(body, dict):
        raise APIError(400, f"the request body must be a JSON object, not {type(body).__name__}")
    try:
        request = kind.model_validate(body)
    except ValidationError as exc:
        # Of the alternatives of a union, the deepest error is the one that says what is wrong.
        first = max(exc.errors(), key=lambda e: len(e["loc"]))
        loc = [str(part) for part in first["loc"] if str(part) not in _UNION_TAGS and "[" not in str(part)]
        param = loc[0] if loc else None
        where = ".".join(loc)
        if first["type"] == "extra_forbidden":
            message = f"unknown field '{where}'"
        elif first["type"] == "missing":
            message = f"missing required field '{where}'"
        else:
            message = f"invalid value for '{param}' ({where}): {first['msg']}"
        raise APIError(400, message, param=param) from None
    check_neutral(request)
    return request
