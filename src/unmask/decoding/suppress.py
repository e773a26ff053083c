"""Tokens a masked position may never become (LLaDA-V's forbidden specials), resolved by name."""

from __future__ import annotations

from ..options import LLADA_V_SUPPRESSED

FAMILY_SUPPRESSED = {"llada-v": LLADA_V_SUPPRESSED}


def suppressed_ids(tokenizer, family: str, names: list[str] | None) -> tuple[int, ...]:
    """Token ids of `names` (None: the family's default list).

    The official LLaDA-V code hard-codes the 8B tokenizer's ids; here each name is looked up in
    the checkpoint's own tokenizer, so a small vocabulary works. A default name the tokenizer
    lacks is skipped (no id can decode to it); a name the caller gave must exist.
    """
    explicit = names is not None
    ids = []
    for name in (names if explicit else FAMILY_SUPPRESSED.get(family, ())):
        tid = tokenizer.token_to_id(name)
        if tid is None:
            if explicit:
                raise ValueError(f"generation.suppress_tokens: {name!r} is not a token of this model's tokenizer")
            continue
        ids.append(tid)
    return tuple(sorted(set(ids)))
