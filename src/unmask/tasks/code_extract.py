"""Turn a model's output into the Python code to execute (HumanEval, HumanEval-instruct, MBPP).

Models wrap code in Markdown fences, write prose before or after it, and keep going after the
function with usage examples, prints or asserts of their own (which may be wrong). Two shapes:

* a *body*: the continuation of a completion prompt; it is indented, and ends at the first
  logical line that starts in column 0 (a top-level def/class/if/print ..., or prose);
* *module* code: whole functions; only definitions are kept (imports, functions, classes,
  decorators, assignments, try blocks), so examples and `if __name__ == "__main__":` go.
"""

from __future__ import annotations

import ast
import io
import re
import textwrap
import tokenize

_FENCE = re.compile(r"^\s*```")
_IMPORT = re.compile(r"^(?:import|from)\s+[\w.]+")
_CODE_START = re.compile(r"^(?:async\s+def|def|class|import|from)\s|^@\w")
_SKIPPED_TOKENS = {tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.COMMENT, tokenize.ENCODING, tokenize.ENDMARKER}
_KEPT_NODES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom, ast.Assign, ast.AnnAssign, ast.Try)
_DEFINITION = re.compile(r"^(?:async\s+def|def|class|import|from|try)\b|^@\w|^[A-Za-z_][\w\s,]*(?::[^=]+)?=(?!=)")


def fenced_blocks(text: str) -> list[str]:
    """Contents of the ``` fenced blocks, in order; an unclosed last fence runs to the end."""
    blocks: list[str] = []
    current: list[str] | None = None
    for line in text.split("\n"):
        if _FENCE.match(line):
            if current is None:
                current = []
            else:
                blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line)
    if current is not None:
        blocks.append("\n".join(current))
    return blocks


def _top_level_starts(text: str) -> list[int]:
    """0-based indices of lines where a logical line begins in column 0 (strings and comments aside).

    Uses the tokenizer, so a column-0 line inside a triple-quoted string is not a start; where the
    tokenizer gives up (truncated code), the rest is read line by line.
    """
    starts: list[int] = []
    at_line_start = True
    last_line = -1
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            last_line = tok.start[0] - 1
            if tok.type == tokenize.NEWLINE:
                at_line_start = True
            if tok.type in _SKIPPED_TOKENS:
                continue
            if at_line_start and tok.start[1] == 0:
                starts.append(tok.start[0] - 1)
            at_line_start = False
    except (tokenize.TokenError, IndentationError, SyntaxError):
        lines = text.split("\n")
        for i in range(last_line + 1, len(lines)):
            if lines[i].strip() and not lines[i][0].isspace() and not lines[i].lstrip().startswith("#"):
                starts.append(i)
    return starts


def _is_body(text: str) -> bool:
    first = next((line for line in text.split("\n") if line.strip()), "")
    return bool(first) and first[0].isspace()


def body(text: str) -> str:
    """The indented body at the start of `text`, up to the first top-level logical line."""
    lines = text.split("\n")
    starts = _top_level_starts(text)
    end = starts[0] if starts else len(lines)
    return "\n".join(lines[:end]).rstrip() + "\n"


def module(text: str) -> str:
    """Only the top-level definitions of `text` (see the module docstring)."""
    text = textwrap.dedent(text)
    lines = text.split("\n")
    try:
        tree = ast.parse(text)
    except SyntaxError:
        tree = None
    kept: list[str] = []
    if tree is not None:
        for node in tree.body:
            if isinstance(node, _KEPT_NODES):
                first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
                kept.append("\n".join(lines[first - 1 : node.end_lineno]))
    else:  # unparsable (truncated, prose mixed in): keep chunks that open like a definition
        starts = _top_level_starts(text) + [len(lines)]
        for a, b in zip(starts, starts[1:]):
            if _DEFINITION.match(lines[a]):
                kept.append("\n".join(lines[a:b]).rstrip())
    return "\n\n".join(kept).strip("\n") + "\n" if kept else ""


def strip_fences(text: str) -> str:
    """A completion's code: what precedes a closing fence, or else the first fenced block."""
    if "```" not in text:
        return text
    before = text.split("```", 1)[0]
    if before.strip():
        return before
    blocks = fenced_blocks(text)
    return blocks[0] if blocks else ""


def completion_code(completion: str) -> str:
    """HumanEval post-processing: the function body a completion continues with (fences removed).

    A completion that restarts at column 0 (re-writing the whole function) is kept as module code.
    """
    text = strip_fences(completion.replace("\r\n", "\n"))
    if not text.strip():
        return ""
    return body(text) if _is_body(text) else module(text)


def _pick_block(blocks: list[str], entry_point: str | None) -> str:
    """The block defining `entry_point` (else any function, else the first non-empty one), with
    the imports the other blocks make put in front (models sometimes fence them separately)."""
    chosen = None
    if entry_point:
        chosen = next((b for b in blocks if re.search(rf"\bdef\s+{re.escape(entry_point)}\s*\(", b)), None)
    if chosen is None:
        chosen = next((b for b in blocks if re.search(r"\bdef\s+\w+\s*\(", b)), None)
    if chosen is None:
        return next((b for b in blocks if b.strip()), "")
    imports = [line for b in blocks if b is not chosen for line in b.split("\n") if _IMPORT.match(line)]
    return "\n".join(imports + [chosen]) if imports else chosen


def response_code(text: str, entry_point: str | None = None) -> str:
    """Code in a chat answer: the fenced block defining `entry_point` (or any function), else the
    code that follows the prose; trailing examples and prose are dropped."""
    text = text.replace("\r\n", "\n")
    blocks = fenced_blocks(text)
    if blocks:
        code = _pick_block(blocks, entry_point)
    else:
        lines = text.split("\n")
        start = next((i for i, line in enumerate(lines) if _CODE_START.match(line)), None)
        code = text if start is None else "\n".join(lines[start:])
    if not code.strip():
        return ""
    return body(code) if _is_body(code) else module(code)


def mbpp_code(output: str) -> str:
    """MBPP: the code between `[BEGIN]` (if the model repeats it) and `[DONE]`, fences removed."""
    text = output.replace("\r\n", "\n").split("[DONE]", 1)[0]
    if "[BEGIN]" in text:
        text = text.rsplit("[BEGIN]", 1)[1]
    blocks = fenced_blocks(text)
    if blocks:
        text = _pick_block(blocks, None)
    return module(text) if text.strip() else ""
