"""dpo_utils: the small, tested helper package behind the dpo-tutorial notebooks.

One concept per module:

- ``config``         the single reduced-size switch (environment variable ``DPO_TUTORIAL_SIZE``)
- ``regression``     the MSE toy problem of notebooks 01-02
- ``gradcheck``      finite-difference gradients, to check derivations
- ``preferences``    pairwise preferences and the Bradley-Terry model
- ``tabular``        a tabular policy where the DPO answer is known in closed form
- ``losses``         the DPO loss family on per-sequence log-probs
- ``logprobs``       per-sequence log-probs from logits, labels and a completion mask
- ``models``         load a causal LM + tokenizer, with an offline SmolLM2 fallback
- ``model_cache``    the offline SmolLM2: the bundled Q4_1 GGUF, dequantised once and cached
- ``preference_rows`` preference rows in TRL's format: read from a file or a list, every field checked
- ``data``           preference data for training: tokenized as TRL does, collated into batches
- ``checks``         check preference data before training, and print a short report
- ``trainer``        a small, readable DPO training loop (and Preferred-FT, its SFT baseline)
- ``checkpoints``    checkpoints of a run: atomic writes, fingerprints, resume and load only the run's own
- ``precision``      mixed precision: fp32 master weights, half-precision compute, fp16 loss scaling
- ``numerics``       non-finite logits or log-probs and degenerate samples: a clear error with advice
- ``memory``         how much accelerator memory one DPO step needs, checked against measured peaks
- ``intervals``      uncertainty with the prompt as the unit: standard errors, bootstrap and paired intervals
- ``sampling``       sample completions at temperature 1 (``Sample``), their log-probs, where they stopped
- ``evaluation``     score a policy's samples with a reward, estimate KL to the reference, compare policies
- ``kl_check``       the KL estimate checked against an exact KL (tiny models, every completion enumerated)
- ``sentiment``      the controlled-sentiment experiment of notebook 07, and its reward (VADER)
- ``pairing``        preference pairs from scored samples: each prompt's best against its worst
- ``coverage``       who wrote the responses: off-policy and on-policy pairs in the tabular world
- ``iterative``      iterative (on-policy) DPO: sample, rank with a reward, pair, train again
- ``best_of_n``      best-of-N from the reference: expected best reward, its KL, the closed-form bound
- ``online_rl``      the online-RL baseline: TRL's GRPO with a reward function and a KL penalty, checkpointed
- ``frontier``       methods traced through training on one reward-KL plot
- ``presets``        run presets for notebook 08, per kind of machine
- ``lora``           LoRA adapters with peft, and the reference model for free (adapters disabled)
- ``hub_data``       notebook 08's preference data: hub or shipped JSONL, length-filtered, split by prompt
- ``judging``        a reward-model (or VADER) judge and the win rate with a confidence interval
- ``trl_check``      TRL's DPO loss and tokenization on the same rows, to check that ``dpo_utils`` computes the same
- ``architectures``  public model architectures, random-initialised, for benchmarks without downloads
- ``plotting``       the few plots every notebook draws
- ``progress``       progress bars that stay readable in stored notebook outputs
"""

__version__ = "0.1.0"
