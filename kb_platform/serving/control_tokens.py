"""Chat-control tokens written as text, removed from what documents and users put in a prompt.

llama.cpp and Hugging Face tokenizers turn the text of a special token ("<|im_end|>",
"<end_of_turn>", "</s>") into that token, so a document that contains one could close the user's
turn inside our prompt and open a forged system or assistant turn. Sources and questions are
data: their control tokens are replaced by a space before the prompt is built. The patterns cover
the families the services run (Qwen/ChatML, Llama 2 and 3, Gemma, Mistral, Phi)."""

from __future__ import annotations

import re

_CONTROL = re.compile(
    r"<\|[^<>|\s]{1,48}\|>"  # ChatML, Llama 3, Phi: <|im_start|>, <|eot_id|>, <|end|>
    r"|</?(?:s|bos|eos|pad|unk|start_of_turn|end_of_turn|start_of_image|end_of_image"
    r"|think|tool_call|tool_response)>"  # Gemma, Llama 2 / Mistral, Qwen's tags
    r"|\[/?(?:INST|SYSTEM_PROMPT|AVAILABLE_TOOLS|TOOL_CALLS)\]"  # Llama 2 / Mistral
    r"|<</?SYS>>",
    re.IGNORECASE,
)


def neutralise(text: str) -> str:
    """``text`` with every chat-control token replaced by a space."""
    return _CONTROL.sub(" ", text)


def control_tokens_in(text: str) -> list[str]:
    """The chat-control tokens ``text`` carries (for tests and logs)."""
    return _CONTROL.findall(text)
