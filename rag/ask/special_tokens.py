"""The served tokenizer's special and added tokens, which quoted text must never spell.

A tokenizer matches its added tokens (``<|im_start|>``, SmolLM2's ``<file_sep>``, Qwen3's
``<tool_call>`` and ``<think>``, ...) in the raw text before anything else, and each becomes its
control token: a document that spells one would open a chat turn or a tool call inside the
prompt. ``Neutraliser`` defuses every occurrence in passages and questions, and the passage tags
a document might fake, by writing a token's first character as an entity (``<`` becomes
``&lt;``): the text reads the same to the model, and the tokenizer sees no token.

The tokens come from the served tokenizer itself when the service has it (``RAG_LLM_TOKENIZER``,
or the managed engine's model folder: ``LocalTokenCounter.special_tokens``). Counting through
the engine's ``/tokenize`` alone, no list can be read (vLLM serves none), so ``KNOWN_ADDED_TOKENS``
stands in: the added tokens of the two served models, Qwen3 and SmolLM2, besides every
``<|...`` token of any model.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Qwen3 (Qwen3-4B-Instruct-2507, ids 151643-151668).
QWEN3_ADDED_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
)
# SmolLM2 (SmolLM2-135M-Instruct, ids 0-16).
SMOLLM2_ADDED_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<repo_name>",
    "<reponame>",
    "<file_sep>",
    "<filename>",
    "<gh_stars>",
    "<issue_start>",
    "<issue_comment>",
    "<issue_closed>",
    "<jupyter_start>",
    "<jupyter_text>",
    "<jupyter_code>",
    "<jupyter_output>",
    "<jupyter_script>",
    "<empty_output>",
)
KNOWN_ADDED_TOKENS = frozenset(QWEN3_ADDED_TOKENS + SMOLLM2_ADDED_TOKENS)

# Always: a passage tag (any case or spacing) that could end a passage's block early, and any
# token of the <|...|> family, whatever the tokenizer.
_ALWAYS = r"<(?=\s*/?\s*passages?\b|\|)"


def _defused(token: str) -> str:
    """``token`` as text no tokenizer reads as the token: its "<" (or else its first character)
    as an entity."""
    at = token.find("<")
    if at < 0:
        return f"&#{ord(token[0])};{token[1:]}"
    return f"{token[:at]}&lt;{token[at + 1 :]}"


class Neutraliser:
    """Defuses the passage tags and every one of ``tokens`` in quoted text (see the module)."""

    def __init__(self, tokens: Iterable[str] = KNOWN_ADDED_TOKENS) -> None:
        # A token of whitespace alone (some tokenizers add runs of spaces) is plain text; the
        # <|...| family is caught by the pattern already. Longest first: the whole token is met.
        listed = sorted(
            {t for t in tokens if t.strip() and not t.startswith("<|")}, key=lambda t: -len(t)
        )
        self.tokens = frozenset(listed)
        alternatives = "".join(f"|{re.escape(t)}" for t in listed)
        # Any case: a tokenizer that lower-cases before matching must not meet one either.
        self._pattern = re.compile(_ALWAYS + alternatives, re.IGNORECASE)

    def __call__(self, text: str) -> str:
        return self._pattern.sub(self._replace, text)

    @staticmethod
    def _replace(match: re.Match[str]) -> str:
        found = match.group(0)
        return "&lt;" if found == "<" else _defused(found)


DEFAULT_NEUTRALISER = Neutraliser()
