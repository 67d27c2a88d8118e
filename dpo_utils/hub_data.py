"""A preference data set for notebook 08: from the hub (e.g. UltraFeedback binarized) or a shipped
JSONL file, in TRL's format, length-filtered and split into train and held-out rows by prompt."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

from dpo_utils.data import tokenize_row
from dpo_utils.preference_rows import PreferenceDataError, load_preference_rows, validate_row
from dpo_utils.runtime.config import REPO_ROOT


def extract_prompt(row: dict) -> dict:
    """TRL's *implicit prompt* format (the user turn repeated inside ``chosen`` and ``rejected``)
    turned into an explicit ``prompt``: the longest shared message prefix. Explicit rows pass through."""
    if "prompt" in row or not isinstance(row.get("chosen"), list):
        return row
    shared = 0
    while (
        shared < min(len(row["chosen"]), len(row["rejected"])) - 1 and row["chosen"][shared] == row["rejected"][shared]
    ):
        shared += 1
    return {
        **row,
        "prompt": row["chosen"][:shared],
        "chosen": row["chosen"][shared:],
        "rejected": row["rejected"][shared:],
    }


def fits(row: dict, tokenizer, max_prompt_length: int, max_completion_length: int) -> bool:
    """True when the row is valid and neither prompt nor completions would be truncated."""
    try:
        pair = tokenize_row(validate_row(row, 0), tokenizer, max_prompt_length, 10**9)
    except PreferenceDataError:
        return False
    return max(len(pair.chosen_ids), len(pair.rejected_ids)) <= max_completion_length


def split_by_prompt(rows: list[dict], n_test: int) -> tuple[list[dict], list[dict]]:
    """Hold out whole prompts (the last ones) until ``n_test`` rows are held out: no prompt is in both."""
    keys = [json.dumps(row["prompt"], sort_keys=True) for row in rows]
    rows_per_prompt = Counter(keys)
    test_prompts, n_held = set(), 0
    for key in reversed(keys):
        if n_held >= n_test:
            break
        if key not in test_prompts:
            test_prompts.add(key)
            n_held += rows_per_prompt[key]
    return (
        [row for row, key in zip(rows, keys) if key not in test_prompts],
        [row for row, key in zip(rows, keys) if key in test_prompts],
    )


def _select(rows, tokenizer, n, max_prompt_length, max_completion_length, seed):
    rows = [extract_prompt(row) for row in rows]
    random.Random(seed).shuffle(rows)
    kept = []
    for row in rows:
        if fits(row, tokenizer, max_prompt_length, max_completion_length):
            kept.append({name: row[name] for name in ("prompt", "chosen", "rejected")})
            if len(kept) == n:
                break
    return kept


def local_file(source: str) -> Path | None:
    """``source`` as a file: as given, or relative to this repository (how a preset names the shipped
    pairs, so that it prints without this machine's folders); None for a hub data set's name."""
    for path in (Path(source), REPO_ROOT / source):
        if path.is_file():
            return path
    return None


def load_preference_splits(
    source: str,
    tokenizer,
    n_train: int,
    n_test: int,
    max_prompt_length: int,
    max_completion_length: int,
    seed: int = 0,
) -> tuple[list[dict], list[dict]]:
    """``(train_rows, test_rows)`` from a JSONL path (split by prompt) or a hub data set (its
    ``train`` and ``test`` splits), keeping rows that fit the length limits untruncated."""
    local = local_file(source)
    if local is not None:
        rows, _ = load_preference_rows(local)
        train, test = split_by_prompt(rows, n_test)
        return train[:n_train], test[:n_test]
    from datasets import load_dataset

    splits = load_dataset(source)
    pool = lambda split, n: splits[split].shuffle(seed=seed).select(range(min(len(splits[split]), 4 * n)))
    return (
        _select(list(pool("train", n_train)), tokenizer, n_train, max_prompt_length, max_completion_length, seed),
        _select(list(pool("test", n_test)), tokenizer, n_test, max_prompt_length, max_completion_length, seed),
    )
