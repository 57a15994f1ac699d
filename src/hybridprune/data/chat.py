"""Chat records as token ids and a loss mask: 1 on the assistant's tokens, 0 on everything else.

A conversation (`{"messages": [{"role": ..., "content": ...}, ...]}`) is rendered with the tokenizer's
chat template. The assistant's part of message `i` is the text the template adds between the
conversation up to `i` with the generation prompt and the conversation through `i`: the assistant's
content and its end-of-turn marker, not the header the template writes before it (the prompt, which
the model is given, not asked for). Each piece is tokenized on its own, so the mask follows the
pieces exactly. A `{"prompt": ..., "completion": ...}` pair is the prompt (mask 0) then the
completion (mask 1). The attention still sees the whole record: only the loss is masked.
"""

from __future__ import annotations

from typing import Any

from hybridprune.data.errors import DataError


def record_pieces(record: dict, tokenizer: Any, where: str) -> list[tuple[str, int]]:
    """`[(text, counts in the loss)]` of one chat record, in order."""
    messages = record.get("messages")
    if messages is not None:
        return conversation_pieces(messages, tokenizer, where)
    if "prompt" in record and "completion" in record:
        prompt, completion = record["prompt"], record["completion"]
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise DataError(f"{where}: 'prompt' and 'completion' must be text")
        return [(prompt, 0), (completion, 1)]
    raise DataError(f"{where} has neither 'messages' (a conversation) nor 'prompt' and 'completion'; its fields "
                    f"are {sorted(record)}; --chat reads those")


def conversation_pieces(messages: Any, tokenizer: Any, where: str) -> list[tuple[str, int]]:
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise DataError(f"{where}: 'messages' must be a list of {{\"role\": ..., \"content\": ...}} objects")
    if not getattr(tokenizer, "chat_template", None):
        raise DataError("the tokenizer has no chat template, which --chat needs to render conversations; use the "
                        "chat model's tokenizer (or set tokenizer.chat_template), or give prompt/completion pairs")

    def render(msgs, gen=False) -> str:
        if not msgs:
            return ""
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)

    pieces: list[tuple[str, int]] = []
    done = ""
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            prompt = render(messages[:i], gen=True)
            if not prompt.startswith(done):
                raise DataError(f"{where}: the chat template does not render a conversation as a prefix of its "
                                "continuation, so the assistant's tokens cannot be found")
            pieces.append((prompt[len(done):], 0))
            done = prompt
        full = render(messages[: i + 1])
        if not full.startswith(done):
            raise DataError(f"{where}: the chat template does not render a conversation as a prefix of its "
                            "continuation, so the assistant's tokens cannot be found")
        pieces.append((full[len(done):], int(m["role"] == "assistant")))
        done = full
    return [(t, k) for t, k in pieces if t]


def encode_pieces(pieces_list: list[list[tuple[str, int]]], tokenizer: Any) -> list[tuple[list[int], list[int]]]:
    """Token ids and per-token mask of each record, its pieces tokenized in one batch call."""
    flat = [t for pieces in pieces_list for t, _ in pieces]
    encoded = tokenizer(flat, add_special_tokens=False, verbose=False)["input_ids"] if flat else []
    out, k = [], 0
    for pieces in pieces_list:
        ids: list[int] = []
        mask: list[int] = []
        for _, keep in pieces:
            ids += encoded[k]
            mask += [keep] * len(encoded[k])
            k += 1
        out.append((ids, mask))
    return out
