"""dpo_utils: the small, tested helper package behind the dpo-tutorial notebooks.

One concept per module:

- ``config``      the single reduced-size switch (environment variable ``DPO_TUTORIAL_SIZE``)
- ``losses``      the DPO loss family on per-sequence log-probs
- ``logprobs``    per-sequence log-probs from logits, labels and a completion mask
- ``models``      load a causal LM + tokenizer, with an offline SmolLM2 fallback
- ``plotting``    the few plots every notebook draws
- ``regression``  the MSE toy problem of notebooks 01-02
- ``gradcheck``   finite-difference gradients, to check derivations
"""

__version__ = "0.1.0"
