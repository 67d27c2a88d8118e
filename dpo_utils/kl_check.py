r"""A check of the sequence-level KL estimate of :func:`dpo_utils.evaluation.evaluate_policy` against
an exact value.

A model compared with itself gives an estimate of exactly 0 whatever the estimator does, so it
checks nothing. Here two tiny random language models over five tokens, sampled for at most three
new tokens, have few enough possible completions (:math:`1 + 4 + 16 + 64 = 85` per prompt) to
enumerate them all, so

.. math::
    \mathrm{KL}(\pi\,\|\,\pi_{ref})
    = \frac{1}{|X|}\sum_{x}\sum_{y} \pi(y|x)\,\big[\log\pi(y|x) - \log\pi_{ref}(y|x)\big]

is an exact sum, computed from the models' next-token distributions without any of
``dpo_utils``' sampling or log-prob code. The estimate averages :math:`\log\pi - \log\pi_{ref}`
over completions sampled from :math:`\pi`; it must land within a few standard errors of the sum.
Sampling from the wrong model, top-k or temperature, a mask off by one token or a left-padding
bug each move it by many standard errors.
"""

from __future__ import annotations

import contextlib
import io
import math
import statistics
from dataclasses import dataclass

import torch

from dpo_utils.evaluation import evaluate_policy

WORDS = ("<eos>", "a", "b", "c", "d")  # token 0 ends a completion and pads
PROMPTS = ("a b", "c")  # different lengths: sampling pads them on the left


@dataclass
class KLCheck:
    """The estimate, its standard error and the exact value, in nats."""

    estimate: float
    sem: float
    exact: float
    reverse_exact: float  # KL(pi_ref || pi): what sampling from the wrong model would estimate, negated
    completions: int  # completions enumerated per prompt
    tolerance: float = 4.0  # in standard errors

    @property
    def ok(self) -> bool:
        return abs(self.estimate - self.exact) <= self.tolerance * self.sem

    def summary(self) -> str:
        """Rounded values that do not change between machines, for a checked notebook output."""
        return (
            f"exact KL(pi || pi_ref) over all {self.completions} completions of each prompt: {self.exact:.2f} nats; "
            f"the estimate lies within {self.tolerance:.0f} standard errors of it: {self.ok}"
        )


def tiny_tokenizer():
    """A word-level tokenizer for :data:`WORDS`; EOS is also the padding token."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({word: i for i, word in enumerate(WORDS)}, unk_token=WORDS[0]))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=WORDS[0], pad_token=WORDS[0])


def tiny_model(seed: int, sharpness: float = 0.25):
    """A one-layer Llama over :data:`WORDS`; ``sharpness`` scales the output layer (peakier, more distinct models)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(WORDS),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=16,
        pad_token_id=0,
        eos_token_id=0,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(sharpness / model.lm_head.weight.std())
    return model


@torch.no_grad()
def completion_logprobs(model, prompt_ids: list[int], max_new_tokens: int, eos_id: int = 0) -> dict[tuple, float]:
    """``{completion: log-prob}`` for every completion sampling can end with: at EOS, or cut at ``max_new_tokens``."""
    done, open_prefixes = {}, {(): 0.0}
    for step in range(max_new_tokens):
        grown = {}
        for prefix, logp in open_prefixes.items():
            logits = model(input_ids=torch.tensor([prompt_ids + list(prefix)])).logits[0, -1]
            for token, token_logp in enumerate(torch.log_softmax(logits.double(), -1).tolist()):
                finished = token == eos_id or step == max_new_tokens - 1
                (done if finished else grown)[prefix + (token,)] = logp + token_logp
        open_prefixes = grown
    return done


def exact_kl(policy, reference, prompt_ids: list[int], max_new_tokens: int) -> tuple[float, int]:
    """KL(policy || reference) over all completions of one prompt, and how many there are."""
    policy_logps = completion_logprobs(policy, prompt_ids, max_new_tokens)
    reference_logps = completion_logprobs(reference, prompt_ids, max_new_tokens)
    total = math.fsum(math.exp(lp) for lp in policy_logps.values())
    if abs(total - 1) > 1e-9:
        raise AssertionError(f"the enumerated completions carry probability {total}, not 1")
    kl = math.fsum(math.exp(lp) * (lp - reference_logps[y]) for y, lp in policy_logps.items())
    return kl, len(policy_logps)


def check_kl_estimator(n_samples: int = 200, max_new_tokens: int = 3, seed: int = 0) -> KLCheck:
    """``evaluate_policy``'s KL estimate (``n_samples`` per prompt) for two tiny models, against the exact sum."""
    tokenizer, policy, reference = tiny_tokenizer(), tiny_model(seed=1), tiny_model(seed=2)
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    exact = [exact_kl(policy, reference, ids, max_new_tokens) for ids in prompt_ids]
    reverse = [exact_kl(reference, policy, ids, max_new_tokens)[0] for ids in prompt_ids]
    zero_reward = lambda texts: [0.0] * len(texts)
    with contextlib.redirect_stderr(io.StringIO()):  # no progress bars: a checked cell prints one line
        result = evaluate_policy(
            policy,
            reference,
            tokenizer,
            list(PROMPTS),
            reward_fn=zero_reward,
            n_samples=n_samples,
            max_new_tokens=max_new_tokens,
            seed=seed,
            mixed_precision="no",
        )  # fp32, as the exact sum
    mean = lambda values: sum(values) / len(values)
    # The prompts are fixed and the exact sum is over the same prompts: the error to compare with
    # is the sampling error of the estimate over all samples, not the spread over prompts.
    log_ratios = result["per_sample"]["log_ratio"]
    sem = statistics.stdev(log_ratios) / len(log_ratios) ** 0.5
    return KLCheck(result["kl"], sem, mean([kl for kl, _ in exact]), mean(reverse), exact[0][1])
