"""The runtime layer: what the teaching code runs on, and never imports back.

- ``config``         the single reduced-size switch (environment variable ``DPO_TUTORIAL_SIZE``), and where runs go
- ``progress``       progress bars that stay readable in stored notebook outputs
- ``precision``      mixed precision: fp32 master weights, half-precision compute, fp16 loss scaling
- ``models``         load a causal LM + tokenizer, with an offline SmolLM2 fallback
- ``model_cache``    the offline SmolLM2: the bundled Q4_1 GGUF, dequantised once and cached
- ``architectures``  public model architectures, random-initialised, for benchmarks without downloads
- ``memory``         how much accelerator memory one DPO step needs, checked against measured peaks
- ``presets``        run presets for notebook 08, per kind of machine
"""
