"""Put a tiny random Llama where the offline fallback looks, in the cache folder given as the first
argument, with the bundled SmolLM2's tokenizer (taken from the cache folder given as the second).

On a CPU without native bf16 (AVX2 only), each bf16 or fp16 matmul takes ~50x as long as in
fp32. ``.ci/gpu-profile`` then runs notebook 08 under the GPU profiles on this stand-in: the same
cells and code paths, a model ~170x cheaper per token than SmolLM2-135M. Run from the repository
root with ``PYTHONPATH=.`` (it uses the tests' helper).
"""

import os
import sys
from pathlib import Path

from transformers import AutoTokenizer

from dpo_utils.runtime.model_cache import offline_model_dir
from tests.helpers import save_tiny_fallback_model

target_cache, source_cache = Path(sys.argv[1]), Path(sys.argv[2])
os.environ["DPO_TUTORIAL_CACHE"] = str(source_cache)  # read by offline_model_dir() when called
save_tiny_fallback_model(target_cache, AutoTokenizer.from_pretrained(offline_model_dir()))
print("a tiny random Llama (one layer, width 16) stands in for the bundled model")
