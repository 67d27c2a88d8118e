"""Check preference data before training, and print a short report.

Each check catches a problem that otherwise shows up much later as a strange training curve:

==================  ========  ===================================================================
check               severity  what goes wrong in training
==================  ========  ===================================================================
no_rows             error     the source has no rows (an empty or blank-only file), or no usable one
invalid             error     a line is not UTF-8 or not JSON; a row is not a dict; a field is missing, empty,
                              of the wrong type, or holds a message with an unknown role (or, in a
                              completion, a turn that is not the assistant's)
identical           error     chosen == rejected, as written or once cut to ``max_completion_length``:
                              the pair has zero gradient and teaches nothing
prompt_too_long     error     the prompt alone exceeds ``max_prompt_length``
no_pad_token        error     batches cannot be padded
pad_is_eos          warning   code that masks pad tokens also masks EOS: the model never learns to stop
no_eos              warning   a completion has no EOS token: the model is not taught to stop
truncated           warning   a completion is cut at ``max_completion_length`` (and loses its EOS)
boundary            warning   tokenized together, prompt and completion merge tokens at their border
control_tokens      warning   a field's text spells a special token (``<|im_start|>``): it is tokenized as
                              that control token, a turn boundary the data may not mean
contradictory       warning   the same pair appears with chosen and rejected swapped (loss stays near log 2)
duplicate           warning   the same row appears more than once
length_bias         warning   chosen is longer (or shorter) in most pairs: DPO can learn length, not quality
capped              warning   many completions stop mid-sentence at the same longest length: cut at a
                              generation cap, then given an EOS, they teach the model to stop there
==================  ========  ===================================================================
"""

from __future__ import annotations

import json
import statistics
import warnings
from collections import Counter
from dataclasses import dataclass, field

from dpo_utils.data import (
    PromptBoundaryWarning,
    check_lengths,
    completion_texts,
    control_token_fields,
    render_prompt,
    tokenize_row,
)
from dpo_utils.preference_rows import (
    IdenticalPairError,
    PreferenceDataError,
    is_path,
    no_rows_reason,
    read_preference_rows,
    validate_row,
)


@dataclass
class Finding:
    """One problem: which check found it, how bad it is, and the rows concerned (a JSONL file's
    1-based line numbers, or a list's indices, as in :func:`dpo_utils.preference_rows.read_preference_rows`)."""

    check: str
    severity: str  # "error" or "warning"
    message: str
    rows: list[int] = field(default_factory=list)


@dataclass
class DataReport:
    """What :func:`check_preference_data` found, with length statistics of the usable rows."""

    source: str
    n_rows: int
    findings: list[Finding]
    stats: dict
    unit: str = "row"  # "line" for a JSONL file: Finding.rows are then its line numbers

    @property
    def ok(self) -> bool:
        """True when nothing would make training fail or silently wrong (warnings allowed)."""
        return not any(f.severity == "error" for f in self.findings)

    @property
    def checks_failed(self) -> set[str]:
        return {f.check for f in self.findings}

    def __str__(self) -> str:
        counts = Counter(f.severity for f in self.findings)
        lines = [
            f"Checked {self.n_rows} rows of {self.source}: {counts['error']} errors, {counts['warning']} warnings"
        ]
        for f in self.findings:
            where = f" ({self.unit}s {_row_list(f.rows)})" if f.rows else ""
            lines.append(f"  {f.severity.upper():7s} {f.check}{where}: {f.message}")
        if self.stats:
            s = self.stats
            lines.append(
                f"  lengths: chosen {s['chosen_tokens']:.1f}, rejected {s['rejected_tokens']:.1f} tokens on average; "
                f"chosen longer in {s['chosen_longer']:.0%}, shorter in {s['chosen_shorter']:.0%} of pairs"
            )
        return "\n".join(lines)


def _row_list(rows: list[int], shown: int = 5) -> str:
    text = ", ".join(map(str, rows[:shown]))
    return text + (f" and {len(rows) - shown} more" if len(rows) > shown else "")


def check_tokenizer(tokenizer) -> list[Finding]:
    """Pad and EOS tokens: present, and distinct."""
    if tokenizer.pad_token_id is None:
        return [
            Finding(
                "no_pad_token",
                "error",
                "the tokenizer has no pad token; call dpo_utils.runtime.models.ensure_pad_token",
            )
        ]
    if tokenizer.pad_token_id == tokenizer.eos_token_id:
        return [
            Finding(
                "pad_is_eos",
                "warning",
                f"pad token == EOS ({tokenizer.eos_token!r}): masking pad tokens by id also "
                "masks every EOS; use a distinct pad token (dpo_utils.runtime.models.ensure_pad_token)",
            )
        ]
    return []


def check_preference_data(
    source,
    tokenizer,
    max_prompt_length: int = 256,
    max_completion_length: int = 256,
    length_bias_threshold: float = 0.7,
    min_pairs_for_bias: int = 8,
) -> DataReport:
    """Run every check on ``source`` (JSONL path, ``datasets.Dataset`` or list of rows).

    Every row that :func:`~dpo_utils.data.prepare_preference_data` (with the same lengths) refuses
    is an error here, and so is a source it refuses as a whole (no usable rows); a path that is
    missing or is a directory raises, as it does there, and so do bad length limits."""
    check_lengths(max_prompt_length, max_completion_length)
    items, name = read_preference_rows(source)
    found: dict[tuple[str, str, str], list[int]] = {}
    add = lambda check, severity, message, row: found.setdefault((check, severity, message), []).append(row)
    lengths, endings, seen, usable = [], [], set(), 0
    for index, where, row in items:
        try:
            if isinstance(row, PreferenceDataError):
                raise row
            checked = validate_row(row, where, name)
        except IdenticalPairError:
            add("identical", "error", "chosen and rejected are the same", index)
            continue
        except PreferenceDataError as error:
            add("invalid", "error", str(error).removeprefix(f"{name}, {where}").lstrip(":, "), index)
            continue
        problems, row_lengths = _row_problems(checked, tokenizer, max_prompt_length, max_completion_length)
        if not any(severity == "error" for _, severity, _ in problems):
            problems += _loader_problems(checked, tokenizer, max_prompt_length, max_completion_length)
        for problem in problems:
            add(*problem, index)
        usable += not any(severity == "error" for _, severity, _ in problems)
        _track_repeats(checked, index, seen, add)
        lengths += [row_lengths] if row_lengths else []
        if row_lengths:
            endings += [(index, n, _completion_end(checked, label)) for label, n in zip(SIDES, row_lengths)]
    findings = check_tokenizer(tokenizer) + [Finding(c, s, m, r) for (c, s, m), r in found.items()]
    if not usable:  # prepare_preference_data refuses such a source, in both its modes
        findings.append(Finding("no_rows", "error", no_rows_reason(items, source)))
    stats = _length_stats(lengths)
    differing = stats.get("chosen_longer", 0) + stats.get("chosen_shorter", 0)
    if differing * len(lengths) >= min_pairs_for_bias:  # enough pairs whose lengths differ to call it a bias
        longer = stats["chosen_longer"] / differing
        if max(longer, 1 - longer) >= length_bias_threshold:
            side, share = ("longer", longer) if longer > 0.5 else ("shorter", 1 - longer)
            findings.append(
                Finding(
                    "length_bias",
                    "warning",
                    f"where lengths differ, chosen is {side} than rejected in {share:.0%} "
                    "of pairs: DPO can learn length instead of quality (SimPO's length normalisation or "
                    "length-matched pairs help)",
                )
            )
    findings += _capped_completions(endings)
    unit = "line" if is_path(source) else "row"
    return DataReport(name, len(items), findings, stats, unit)


def _row_problems(row, tokenizer, max_prompt_length, max_completion_length):
    """``(check, severity, message)`` for each problem of one valid row, and its completion lengths."""
    try:
        prompt_text = render_prompt(tokenizer, row["prompt"])
        completions = completion_texts(tokenizer, row, prompt_text)
    except PreferenceDataError as error:
        return [("invalid", "error", str(error))], None
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]
    prompt_ids, problems, lengths = encode(prompt_text), [], []
    if max_prompt_length is not None and len(prompt_ids) > max_prompt_length:
        problems.append(
            ("prompt_too_long", "error", f"prompt longer than max_prompt_length={max_prompt_length} tokens")
        )
    for label, text in zip(("chosen", "rejected"), completions):
        ids = encode(text)
        lengths.append(len(ids))
        if tokenizer.eos_token_id not in ids:
            problems.append(("no_eos", "warning", f"{label} has no EOS token"))
        elif max_completion_length is not None and len(ids) > max_completion_length:
            problems.append(
                (
                    "truncated",
                    "warning",
                    f"{label} is cut at max_completion_length={max_completion_length} tokens, losing its EOS",
                )
            )
        if encode(prompt_text + text)[: len(prompt_ids)] != prompt_ids:
            problems.append(
                (
                    "boundary",
                    "warning",
                    "prompt + completion tokenized together merge tokens across the border "
                    "(often a trailing space in the prompt): the prompt's end is trained as completion (TRL's "
                    "split and ours); end the prompt on a token boundary or pass tokenization='separate'",
                )
            )
    problems += [
        (
            "control_tokens",
            "warning",
            f"field '{name}' spells the special token {token!r}, which the tokenizer turns into that control "
            "token; write turns as message lists, or remove the token text",
        )
        for name, token in control_token_fields(row, tokenizer)
    ]
    return list(dict.fromkeys(problems)), tuple(lengths)


def _loader_problems(row, tokenizer, max_prompt_length, max_completion_length):
    """What :func:`~dpo_utils.data.tokenize_row` refuses in a row the other checks let through (a pair that
    becomes identical when cut to ``max_completion_length``), so the report agrees with the loader."""
    try:
        with warnings.catch_warnings():  # the boundary check above reports it, once per row
            warnings.simplefilter("ignore", PromptBoundaryWarning)
            tokenize_row(row, tokenizer, max_prompt_length, max_completion_length)
    except IdenticalPairError:
        return [
            (
                "identical",
                "error",
                f"chosen and rejected are the same after truncation to max_completion_length="
                f"{max_completion_length} tokens",
            )
        ]
    except PreferenceDataError as error:
        return [("invalid", "error", str(error))]
    return []


SIDES = ("chosen", "rejected")
SENTENCE_ENDS = tuple(".!?…\"')]*")
MIN_CAP_TOKENS = 16  # a generation cap shorter than this is unlikely; short answers often lack a full stop


def _completion_end(row: dict, label: str) -> str:
    """The last characters of a completion's own text (its last message's content, for messages)."""
    completion = row[label]
    text = completion if isinstance(completion, str) else completion[-1]["content"]
    return text.rstrip()[-10:]


def _capped_completions(endings: list[tuple[int, int, str]], min_share: float = 0.1, min_count: int = 3):
    """A pile-up of completions within 10% of the longest, none ending a sentence: a generation cap.

    ``endings`` holds ``(row, tokens, last characters)`` per completion. Tokenization then appends EOS
    (TRL's and ours), so such pairs teach the model to stop mid-sentence."""
    if not endings:
        return []
    longest = max(n for _, n, _ in endings)
    cut = [(row, n) for row, n, end in endings if n >= 0.9 * longest and not end.endswith(SENTENCE_ENDS)]
    if longest < MIN_CAP_TOKENS or len(cut) < max(min_count, min_share * len(endings)):
        return []
    message = (
        f"{len(cut)} of {len(endings)} completions stop within 10% of the longest ({longest} tokens, "
        "EOS included) without ending a sentence: they look cut at a generation cap, and with the EOS "
        "that tokenization appends they teach the model to stop mid-sentence; sample them to their end "
        "with a higher cap, or drop them"
    )
    return [Finding("capped", "warning", message, sorted({row for row, _ in cut}))]


def _track_repeats(row, index, seen, add) -> None:
    key = lambda a, b: json.dumps([row["prompt"], a, b], sort_keys=True)
    same, swapped = key(row["chosen"], row["rejected"]), key(row["rejected"], row["chosen"])
    if same in seen:
        add("duplicate", "warning", "repeats an earlier row", index)
    if swapped in seen:
        add("contradictory", "warning", "the same pair with chosen and rejected swapped appears earlier", index)
    seen.add(same)


def _length_stats(lengths: list[tuple[int, int]]) -> dict:
    if not lengths:
        return {}
    return {
        "chosen_tokens": statistics.fmean(c for c, _ in lengths),
        "rejected_tokens": statistics.fmean(r for _, r in lengths),
        "chosen_longer": statistics.fmean(float(c > r) for c, r in lengths),
        "chosen_shorter": statistics.fmean(float(c < r) for c, r in lengths),
    }
