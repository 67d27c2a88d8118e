"""Put a tiny random Llama where the offline fallback looks, in the cache folder given as the first
argument, with the bundled SmolLM2's tokenizer (taken from the cache folder given as the second).

On a CPU without native bf16 (AVX2 only), each bf16 or fp16 matmul takes ~50x as long as in
fp32. ``.ci/gpu-profile`` then runs notebook 08 under the GPU profiles on this stand-in: the same
cells and code paths, a model ~170x cheaper per token than SmolLM2-135M.
"""

import os
import sys
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from dpo_utils.models import offline_cache_name, offline_model_dir

target_cache, source_cache = Path(sys.argv[1]), Path(sys.argv[2])
os.environ["DPO_TUTORIAL_CACHE"] = str(source_cache)  # read by offline_model_dir() when called

tokenizer = AutoTokenizer.from_pretrained(offline_model_dir())
config = LlamaConfig(
    vocab_size=len(tokenizer),
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
    max_position_embeddings=2048,
    bos_token_id=tokenizer.bos_token_id,
    eos_token_id=tokenizer.eos_token_id,
    pad_token_id=tokenizer.pad_token_id,
    tie_word_embeddings=True,
)
torch.manual_seed(0)
model, folder = LlamaForCausalLM(config), target_cache / offline_cache_name()
model.save_pretrained(folder)
tokenizer.save_pretrained(folder)
print(f"a tiny random Llama ({model.num_parameters():,} parameters) stands in for the bundled model")
