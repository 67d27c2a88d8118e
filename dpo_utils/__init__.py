"""dpo_utils: the small, tested helper package behind the dpo-tutorial notebooks.

Two layers, and the tools beside them. The modules listed here are the teaching code the notebooks
read: losses, log-probs, data, the training loop, sampling, evaluation and the experiments. They run
on :mod:`dpo_utils.runtime` (model loading, the offline model's cache, precision, presets), which
never imports them back. :mod:`dpo_utils.tools` holds the command-line tools, and
:mod:`dpo_utils.exercises` the answer checks of the notebooks' exercises (docs/dpo_utils.md draws
the layers). One concept per module, in the order the notebooks climb:

The toy worlds:

- ``regression``     the MSE toy problem of notebooks 01-02
- ``gradcheck``      finite-difference gradients, to check derivations
- ``preferences``    pairwise preferences and the Bradley-Terry model
- ``tabular``        a tabular policy where the DPO answer is known in closed form
- ``coverage``       who wrote the responses: off-policy and on-policy pairs in the tabular world
- ``failure_modes``  two DPO failures reproduced exactly: a moving reference, likelihood displacement

Losses and log-probs:

- ``losses``         the DPO loss family on per-sequence log-probs
- ``logprobs``       per-sequence log-probs from logits, labels and a completion mask
- ``packing``        padding-free batches: pairs packed into rows, block-diagonal attention
- ``logprob_modes``  how a batch of pairs goes through the model: the log-prob modes, and "auto", which picks one

Data:

- ``preference_rows`` preference rows in TRL's format: read from a file or a list, every field checked
- ``data``           preference data for training: tokenized as TRL does, collated into batches
- ``checks``         check preference data before training, and print a short report

Training:

- ``trainer``        a small, readable DPO training loop (and Preferred-FT, its SFT baseline)
- ``reference``      the reference's log-probs of the training pairs: computed once, and when they may be reused
- ``checkpoints``    checkpoints of a run: atomic writes, fingerprints, resume and load only the run's own
- ``training_checks`` what the trainer refuses before any work: settings, inputs, trained weights not in fp32
- ``numerics``       non-finite logits or log-probs and degenerate samples: a clear error with advice
- ``lora``           LoRA adapters with peft, and the reference model for free (adapters disabled)

Sampling and evaluation:

- ``sampling``       sample completions at temperature 1 (``Sample``), their log-probs, where they stopped
- ``rewards``        the reward the sentiment experiments score samples with (VADER, offline)
- ``evaluation``     score a policy's samples with a reward, estimate KL to the reference, compare policies
- ``intervals``      uncertainty with the prompt as the unit: standard errors, bootstrap and paired intervals
- ``kl_check``       the KL estimate checked against an exact KL (tiny models, every completion enumerated)
- ``judging``        a reward-model (or VADER) judge and the win rate with a confidence interval
- ``plotting``       the few plots every notebook draws
- ``figures``        figures that explain a mechanism of notebooks 00-06 (the ladder, the gradient weight, the masks)
- ``llm_figures``    the same for 07-12 (one DPO step, master weights, loss shapes, the iterative loop, best-of-N)

Experiments:

- ``experiment``     the one experiment of notebooks 07-12, and its runs trained once, then loaded
- ``sentiment``      the controlled-sentiment experiment of notebook 07: prompts, sampled and paired data
- ``pairing``        preference pairs from scored samples: each prompt's best against its worst
- ``iterative``      iterative (on-policy) DPO: sample, rank with a reward, pair, train again
- ``best_of_n``      best-of-N from the reference: expected best reward, its KL, the closed-form bound
- ``online_rl``      the online-RL baseline: TRL's GRPO with a reward function and a KL penalty, checkpointed
- ``frontier``       methods traced through training on one reward-KL plot
- ``hub_data``       notebook 08's preference data: hub or shipped JSONL, length-filtered, split by prompt
- ``trl_check``      TRL's DPO loss and tokenization on the same rows, to check that ``dpo_utils`` computes the same
"""

__version__ = "0.1.0"
