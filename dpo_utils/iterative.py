"""Iterative (on-policy) DPO: sample from the current policy, rank with a reward, pair, train again.

Round 0 trains on a given set of pairs (for example off-policy pairs written by the reference).
Each later round samples completions from the *current* policy on the training prompts, scores
them with the true reward, pairs each prompt's best sample with its worst, and continues
training the current policy on those pairs. The reference stays the same model in every round:
its log-probs are computed from ``reference``, never from the policy a round starts from.

Every round lives in ``output_dir/round_<r>/``: its pairs (``pairs.jsonl``), the trainer's
checkpoint, and ``round.json`` once the round is done, so an interrupted loop resumes where it
stopped: finished rounds are loaded (fingerprint-checked: the round's settings, pairs and starting
weights), an unfinished one resumes from its last checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

from dpo_utils.checkpoints import load_finished_run, state_path
from dpo_utils.data import prepare_preference_data
from dpo_utils.pairing import best_vs_worst_rows
from dpo_utils.preference_rows import save_preference_jsonl
from dpo_utils.reference import reference_logprobs
from dpo_utils.sampling import sample_completions
from dpo_utils.trainer import DPOTrainer


def on_policy_rows(
    policy,
    tokenizer,
    prompts,
    reward_fn,
    n_samples: int,
    max_new_tokens: int,
    seed: int,
    min_gap: float = 0.1,
    keep_capped: bool = False,
    batch_size: int = 16,
) -> list[dict]:
    """Sample ``n_samples`` completions per prompt from ``policy`` (``batch_size`` at once), score them,
    pair best against worst; samples cut at ``max_new_tokens`` are dropped unless ``keep_capped``."""
    samples = sample_completions(
        policy, tokenizer, prompts, n_samples, max_new_tokens, seed=seed, batch_size=batch_size
    )
    eos = None if keep_capped else tokenizer.eos_token_id
    return best_vs_worst_rows(prompts, samples, reward_fn([sample.text for sample in samples]), min_gap, eos)


def run_rounds(
    policy,
    reference,
    tokenizer,
    first_rows: list[dict],
    make_rows,
    configs,
    output_dir,
    evaluate=None,
    max_completion_length: int = 64,
    max_prompt_length: int = 128,
    first_reference_logps=None,
) -> list[dict]:
    """Train ``policy`` for ``len(configs)`` rounds; round ``r`` uses ``configs[r]`` (a ``DPOConfig``).

    Round 0 trains on ``first_rows``; round ``r >= 1`` on ``make_rows(policy, r)``, rows drawn from
    the policy as it is when the round starts. ``evaluate(policy)`` (optional) runs after each
    round. ``first_reference_logps`` (optional): round 0's reference log-probs, when a run on the same
    rows has computed them already. Returns one summary per round: ``round``, ``pairs``, ``history``
    and ``eval``.
    """
    output_dir, summaries = Path(output_dir), []
    for index, config in enumerate(configs):
        folder = output_dir / f"round_{index}"
        if not (folder / "pairs.jsonl").exists():  # an interrupted round keeps the pairs it had
            save_preference_jsonl(first_rows if index == 0 else make_rows(policy, index), folder / "pairs.jsonl")
        pairs, _ = prepare_preference_data(folder / "pairs.jsonl", tokenizer, max_prompt_length, max_completion_length)
        if (folder / "round.json").exists():  # finished earlier: its weights, checked to be this round's
            load_finished_run(policy, pairs, config, folder)
            summaries.append(json.loads((folder / "round.json").read_text()))
            continue
        reference_logps = None  # a resumed round reads them from its checkpoint
        if not state_path(folder).exists():
            reference_logps = first_reference_logps if index == 0 else None
            if reference_logps is None:
                reference_logps = reference_logprobs(reference, pairs, tokenizer.pad_token_id, config)
        history = DPOTrainer(policy, tokenizer, pairs, config, folder, reference_logps).train()
        result = evaluate(policy) if evaluate else None
        summary = {"round": index, "pairs": len(pairs), "history": history, "eval": result}
        (folder / "round.json").write_text(json.dumps(summary))
        summaries.append(summary)
    return summaries
