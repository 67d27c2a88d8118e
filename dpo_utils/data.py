"""Preference data for training: tokenize rows as TRL does, and collate pairs into batches.

:func:`prepare_preference_data` reads and checks rows (:mod:`dpo_utils.preference_rows`), renders
conversational prompts with the chat template, and tokenizes prompt and completion jointly, as TRL
1.16 does (or separately, ``tokenization="separate"``), into :class:`TokenizedPair` objects.
Text that spells a special token of the tokenizer (``<|im_start|>``) is tokenized as that control
token; it is accepted, with one :class:`ControlTokenWarning` naming the rows and fields (a plain
completion's trailing EOS is not warned about: TRL keeps it).
"""

from __future__ import annotations

import numbers
import random
import warnings
from dataclasses import dataclass, field

import torch

from dpo_utils.preference_rows import (
    FIELDS,
    SIDES,
    IdenticalPairError,
    PreferenceDataError,
    no_rows_reason,
    read_preference_rows,
    validate_row,
)


def _first_few(items: list[str], shown: int = 5) -> str:
    text = "; ".join(items[:shown])
    return text + (f" and {len(items) - shown} more" if len(items) > shown else "")


@dataclass
class TokenizedPair:
    """Token ids of one pair: the shared prompt and the two completions (EOS included)."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]


class ControlTokenWarning(UserWarning):
    """Row text spells a special token (``<|im_start|>``), which the tokenizer turns into that control token."""


@dataclass
class SkipReport:
    """Rows left out by ``on_bad_row="skip"``, in source order: ``(number, reason)`` pairs, where
    ``number`` is the file's 1-based line or the list's index and ``reason`` names both.

    ``truncated`` lists the completions kept but cut at ``max_completion_length`` (losing their EOS):
    ``(number, "line 3, field 'chosen'")``. Prompts are never cut: a longer one is refused (skipped)."""

    skipped: list[tuple[int, str]] = field(default_factory=list)
    truncated: list[tuple[int, str]] = field(default_factory=list)
    max_completion_length: int | None = None

    def __str__(self) -> str:
        if not self.skipped:
            text = "no rows skipped"
        else:
            text = "\n".join([f"skipped {len(self.skipped)} rows:"] + [f"  {why}" for _, why in self.skipped])
        if self.truncated:
            text += (
                f"; cut {len(self.truncated)} completions at max_completion_length={self.max_completion_length} "
                f"tokens, losing their EOS: {_first_few([where for _, where in self.truncated])}"
            )
        return text


def check_lengths(max_prompt_length, max_completion_length) -> None:
    """Refuse a token limit that is not a positive integer or ``None`` (no limit), naming it.

    A ``TypeError`` for another type (a bool, a float such as 2.5 or NaN), a ``ValueError`` below 1
    (-1 would cut every completion's EOS, 0 every completion)."""
    for name, value in (("max_prompt_length", max_prompt_length), ("max_completion_length", max_completion_length)):
        if value is None:
            continue
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise TypeError(
                f"{name}={value!r} must be a positive integer or None (no limit), not {type(value).__name__}"
            )
        if value < 1:
            raise ValueError(f"{name}={value!r} must be a positive number of tokens, or None (no limit)")


def render_prompt(tokenizer, prompt) -> str:
    """The text a model continues: plain strings as they are, message lists through the chat template."""
    if isinstance(prompt, str):
        return prompt
    if getattr(tokenizer, "chat_template", None) is None:
        raise PreferenceDataError(
            "conversational data needs a tokenizer with a chat template; "
            "set tokenizer.chat_template or use plain-string rows"
        )
    return tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)


def completion_texts(tokenizer, row: dict, prompt_text: str) -> list[str]:
    """Chosen and rejected as the text that follows ``prompt_text`` (EOS included)."""
    if isinstance(row["prompt"], str):
        return [row[name] + tokenizer.eos_token for name in ("chosen", "rejected")]
    texts = []
    for name in ("chosen", "rejected"):
        full_text = tokenizer.apply_chat_template(row["prompt"] + row[name], tokenize=False)
        if not full_text.startswith(prompt_text):
            raise PreferenceDataError("the chat template does not render the prompt as a prefix of prompt + answer")
        texts.append(full_text[len(prompt_text) :])
    return texts


TOKENIZATIONS = ("joint", "separate")


class PromptBoundaryWarning(UserWarning):
    """The tokenized prompt is not a prefix of the tokenized prompt + completion."""


def common_prefix_length(ids: list[int], other_ids: list[int]) -> int:
    """Number of leading tokens the two sequences share."""
    length = 0
    for token, other in zip(ids, other_ids):
        if token != other:
            break
        length += 1
    return length


def _joint_token_ids(row: dict, tokenizer) -> tuple[list[int], list[list[int]], int]:
    """TRL 1.16's way: the prompt alone, prompt + chosen and prompt + rejected each tokenized whole.

    Returns the prompt's ids, the two full sequences and where the completions start: the longest
    common prefix of the prompt's ids with both full sequences (TRL's ``DPOTrainer._prepare_dataset``).
    """
    if isinstance(row["prompt"], str):
        eos = tokenizer.eos_token
        with_eos = [row[name] if row[name].endswith(eos) else row[name] + eos for name in ("chosen", "rejected")]
        prompt_ids = tokenizer(text=row["prompt"])["input_ids"]
        full = [tokenizer(text=row["prompt"] + completion)["input_ids"] for completion in with_eos]
    else:
        render_prompt(tokenizer, row["prompt"])  # a clear error when the tokenizer has no chat template
        encode = lambda messages, **kwargs: tokenizer.apply_chat_template(
            messages, tokenize=True, return_dict=True, **kwargs
        )["input_ids"]
        prompt_ids = encode(row["prompt"], add_generation_prompt=True)
        full = [encode(row["prompt"] + row[name]) for name in ("chosen", "rejected")]
    start = min(common_prefix_length(prompt_ids, ids) for ids in full)
    if start < len(prompt_ids):
        warnings.warn(
            f"the tokenized prompt is not a prefix of the tokenized prompt + completion (tokens merge "
            f"across the boundary, or the chat template renders the prompt alone differently): the "
            f"completion starts where they diverge, so the prompt's last tokens "
            f"{tokenizer.decode(prompt_ids[start:])!r} are in no training sequence and the tokens replacing "
            f"them are scored as completion. End the prompt on a token boundary (often: no trailing space).",
            PromptBoundaryWarning,
            stacklevel=4,  # the caller of tokenize_row or prepare_preference_data
        )
    return prompt_ids, full, start


def _separate_token_ids(row: dict, tokenizer) -> tuple[list[int], list[int], list[int]]:
    """Prompt and each completion tokenized on their own (no merge across the boundary)."""
    prompt_text = render_prompt(tokenizer, row["prompt"])
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]
    return encode(prompt_text), *(encode(c) for c in completion_texts(tokenizer, row, prompt_text))


def tokenize_row(
    row: dict, tokenizer, max_prompt_length: int, max_completion_length: int, tokenization: str = "joint"
) -> TokenizedPair:
    """Token ids of one validated row.

    ``tokenization="joint"`` (the default) is TRL 1.16's: prompt + completion are tokenized
    together and split where they stop agreeing with the prompt tokenized alone; a merge across
    the boundary moves the prompt's last characters into the completion, with a
    :class:`PromptBoundaryWarning` (Python shows each distinct message once, as TRL warns once).
    ``"separate"`` tokenizes prompt and completions apart, never merging across the boundary.
    Plain strings get EOS appended to the completions (``joint``: unless they end with it, as in
    TRL). A prompt longer than ``max_prompt_length`` tokens (tokenized alone) is refused;
    completions are cut to ``max_completion_length``. Either limit may be ``None``: no limit.
    """
    check_lengths(max_prompt_length, max_completion_length)
    return _tokenize_row(row, tokenizer, max_prompt_length, max_completion_length, tokenization)[0]


def _tokenize_row(
    row: dict, tokenizer, max_prompt_length, max_completion_length, tokenization: str
) -> tuple[TokenizedPair, list[str]]:
    """:func:`tokenize_row` with its limits checked by the caller, and the fields ('chosen', 'rejected') it cut."""
    if tokenization not in TOKENIZATIONS:
        raise ValueError(f"tokenization={tokenization!r}: choose one of {TOKENIZATIONS}")
    if tokenization == "joint":
        prompt_ids, (chosen_full, rejected_full), start = _joint_token_ids(row, tokenizer)
        prompt_length = len(prompt_ids)
        prompt_ids, chosen_ids, rejected_ids = prompt_ids[:start], chosen_full[start:], rejected_full[start:]
    else:
        prompt_ids, chosen_ids, rejected_ids = _separate_token_ids(row, tokenizer)
        prompt_length = len(prompt_ids)
    if max_prompt_length is not None and prompt_length > max_prompt_length:
        raise PreferenceDataError(
            f"field 'prompt': {prompt_length} tokens, longer than max_prompt_length={max_prompt_length}"
        )
    limit = max_completion_length
    cut = [side for side, ids in zip(SIDES, (chosen_ids, rejected_ids)) if limit is not None and len(ids) > limit]
    chosen_ids, rejected_ids = chosen_ids[:max_completion_length], rejected_ids[:max_completion_length]
    if chosen_ids == rejected_ids:
        raise IdenticalPairError(
            f"fields 'chosen'/'rejected': identical after truncation to {max_completion_length} tokens"
        )
    return TokenizedPair(prompt_ids, chosen_ids, rejected_ids), cut


def prepare_preference_data(
    source,
    tokenizer,
    max_prompt_length: int = 256,
    max_completion_length: int = 256,
    on_bad_row: str = "raise",
    tokenization: str = "joint",
) -> tuple[list[TokenizedPair], SkipReport]:
    """Load, validate and tokenize preference data. Returns the pairs and a :class:`SkipReport`.

    ``tokenization``: ``"joint"`` (TRL 1.16's split, the default) or ``"separate"`` (:func:`tokenize_row`).
    The report also counts the completions cut at ``max_completion_length``; rows whose text spells a
    special token get one :class:`ControlTokenWarning`."""
    if on_bad_row not in ("raise", "skip"):
        raise ValueError("on_bad_row must be 'raise' or 'skip'")
    check_lengths(max_prompt_length, max_completion_length)
    items, name = read_preference_rows(source)
    pairs, report, controls = [], SkipReport(max_completion_length=max_completion_length), []
    for number, where, row in items:
        try:
            if isinstance(row, PreferenceDataError):
                raise row
            checked = validate_row(row, where, name)
            pair, cut = _tokenize_row(checked, tokenizer, max_prompt_length, max_completion_length, tokenization)
        except PreferenceDataError as error:
            message = str(error) if str(error).startswith(name) else f"{name}, {where}, {error}"
            if on_bad_row == "raise":
                raise type(error)(message) from None
            report.skipped.append((number, message))
            continue
        pairs.append(pair)
        report.truncated += [(number, f"{where}, field '{side}'") for side in cut]
        controls += [f"{where}, field '{f}' ({token!r})" for f, token in control_token_fields(checked, tokenizer)]
    if controls:
        warnings.warn(_control_token_message(name, controls), ControlTokenWarning, stacklevel=2)
    if not pairs:
        raise PreferenceDataError(
            f"{name}: {no_rows_reason(items, source)}" + (f" ({report})" if report.skipped else "")
        )
    return pairs, report


def control_token_fields(row: dict, tokenizer) -> list[tuple[str, str]]:
    """``(field, special token)`` for each field of a validated row whose text spells a special token
    of ``tokenizer``, which tokenizes it as that control token (a plain completion's trailing EOS excepted)."""
    specials = [token for token in getattr(tokenizer, "all_special_tokens", []) if token]
    found = []
    for name in FIELDS:
        value = row[name]
        texts = [value] if isinstance(value, str) else [message["content"] for message in value]
        if isinstance(value, str) and name != "prompt":
            texts = [value.removesuffix(tokenizer.eos_token or "")]
        token = next((t for t in specials if any(t in text for text in texts)), None)
        found += [(name, token)] if token else []
    return found


def _control_token_message(name: str, places: list[str]) -> str:
    return (
        f"{name}: text spelling a special token of the tokenizer, which turns it into that control token "
        f"(a turn boundary the data may not mean), in {_first_few(places)} (fields: {len(places)}). Write "
        "turns as message lists, or remove the token text"
    )


def collate_sequences(
    rows: list[tuple[list[int], list[int]]], pad_token_id: int, padding_side: str = "right"
) -> dict[str, torch.Tensor]:
    """Pad ``(prompt_ids, completion_ids)`` rows to one length.

    Returns ``input_ids``, ``attention_mask`` and ``completion_mask`` (1 on completion tokens).
    """
    length = max(len(prompt) + len(completion) for prompt, completion in rows)
    ids, attention, completion_mask = [], [], []
    for prompt, completion in rows:
        n_pad = length - len(prompt) - len(completion)
        parts = (prompt + completion, [1] * (len(prompt) + len(completion)), [0] * len(prompt) + [1] * len(completion))
        for out, part, pad in zip((ids, attention, completion_mask), parts, (pad_token_id, 0, 0)):
            out.append([pad] * n_pad + part if padding_side == "left" else part + [pad] * n_pad)
    return {
        "input_ids": torch.tensor(ids),
        "attention_mask": torch.tensor(attention),
        "completion_mask": torch.tensor(completion_mask),
    }


def collate_pairs(
    pairs: list[TokenizedPair], pad_token_id: int, padding_side: str = "right"
) -> dict[str, torch.Tensor]:
    """One batch of ``2B`` sequences, chosen rows first then rejected (see :func:`collate_sequences`)."""
    rows = [(p.prompt_ids, p.chosen_ids) for p in pairs] + [(p.prompt_ids, p.rejected_ids) for p in pairs]
    return collate_sequences(rows, pad_token_id, padding_side)


def collate_shared_prompt(pairs: list[TokenizedPair], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Prompts once, left-padded ``(B, Lp)``; completions chosen-then-rejected, right-padded ``(2B, Lc)``."""
    prompt_len = max(len(p.prompt_ids) for p in pairs)
    completions = [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs]
    completion_len = max(len(c) for c in completions)
    left = lambda ids, n, fill: [fill] * (n - len(ids)) + ids
    right = lambda ids, n, fill: ids + [fill] * (n - len(ids))
    return {
        "prompt_ids": torch.tensor([left(p.prompt_ids, prompt_len, pad_token_id) for p in pairs]),
        "prompt_mask": torch.tensor([left([1] * len(p.prompt_ids), prompt_len, 0) for p in pairs]),
        "completion_ids": torch.tensor([right(c, completion_len, pad_token_id) for c in completions]),
        "completion_mask": torch.tensor([right([1] * len(c), completion_len, 0) for c in completions]),
    }


def batch_indices(step: int, n_pairs: int, batch_size: int, seed: int) -> list[int]:
    """The pair indices of optimizer step ``step``: a fresh shuffle each epoch, fixed by ``seed``."""
    per_epoch = max(n_pairs // batch_size, 1)
    epoch, position = divmod(step, per_epoch)
    order = list(range(n_pairs))
    random.Random(seed * 100_003 + epoch).shuffle(order)
    start = position * batch_size
    return [order[(start + k) % n_pairs] for k in range(batch_size)]
