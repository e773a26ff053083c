"""Chat prompts from OpenAI `messages`, in the model family's chat format.

`LoadedModel.chat_template` formats one user turn (`{content}`), which is what
`unmask.generate(prompts=..., chat=True)` uses; a single user message goes through it
unchanged, so the server and the Python API see the same tokens. Conversations (a system
message, earlier turns) are laid out with the family's published multi-turn format:
LLaDA's Llama-3 style headers (LLaDA-V's with its fixed system message when none is given)
and Dream's Qwen2.5 ChatML (with its default system message when none is given). Image parts
stand in the text as `<image>` (see `schemas.Message.text`). A checkpoint that ships its own single-turn template gets no
multi-turn layout, since unmask cannot know it; such requests are refused with a 400.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..models.families import LLADA_CHAT, LLADA_V_CHAT, LLADA_V_SYSTEM, QWEN_CHAT
from ..models.model import LoadedModel
from .schemas import APIError, Message


@dataclass(frozen=True)
class ChatFormat:
    """How a family lays out a conversation; `single` is its one-user-turn template."""

    single: str
    start: str  # once, before the first turn
    turn: str  # one message: {role} {content}
    assistant: str  # opens the answer
    default_system: str | None  # inserted when the conversation has no system message


FORMATS = {
    "llada": ChatFormat(
        single=LLADA_CHAT,
        start="<|startoftext|>",
        turn="<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>",
        assistant="<|start_header_id|>assistant<|end_header_id|>\n\n",
        default_system=None,
    ),
    # LLaDA-V: LLaDA's layout with the fixed system turn of its "llava_llada" conversation template.
    "llada-v": ChatFormat(
        single=LLADA_V_CHAT,
        start="<|startoftext|>",
        turn="<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>",
        assistant="<|start_header_id|>assistant<|end_header_id|>\n\n",
        default_system=LLADA_V_SYSTEM,
    ),
    "dream": ChatFormat(
        single=QWEN_CHAT,
        start="",
        turn="<|im_start|>{role}\n{content}<|im_end|>\n",
        assistant="<|im_start|>assistant\n",
        default_system="You are a helpful assistant.",
    ),
}


def conversation(fmt: ChatFormat, messages: list[tuple[str, str]]) -> str:
    """Lay out (role, content) pairs, ending with the assistant header."""
    if fmt.default_system is not None and messages[0][0] != "system":
        messages = [("system", fmt.default_system), *messages]
    turns = "".join(fmt.turn.format(role=role, content=content) for role, content in messages)
    return fmt.start + turns + fmt.assistant


def chat_prompt(model: LoadedModel, messages: list[Message]) -> str:
    """The prompt text for a chat request (tokenize without adding special tokens)."""
    if model.chat_template is None:
        raise APIError(400, "this model has no chat template; use /v1/completions with a raw prompt", param="messages")
    pairs = [("system" if m.role == "developer" else m.role, m.text()) for m in messages]
    if pairs[-1][0] != "user":
        raise APIError(400, "the last message must come from the user (the model answers it)", param="messages")
    if len(pairs) == 1:
        return model.chat_template.format(content=pairs[0][1])
    fmt = FORMATS.get(model.cfg.family)
    if fmt is None or model.chat_template != fmt.single:
        raise APIError(
            400,
            "this checkpoint's chat template formats a single user turn only; send one user message",
            param="messages",
        )
    return conversation(fmt, pairs)
