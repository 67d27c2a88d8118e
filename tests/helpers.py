"""Shared test fixtures: tiny random models that run in milliseconds, a stand-in tokenizer, token-id pairs."""

from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from dpo_utils.data import TokenizedPair
from dpo_utils.runtime.model_cache import offline_cache_name

TINY_LLAMA = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    tie_word_embeddings=True,
)
# one layer of width 16: the override for tests that run a tiny Llama over SmolLM2's 49,152 tokens
ONE_LAYER_WIDTH_16 = dict(
    hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1
)


def tiny_llama_config(vocab_size: int = 64, **overrides) -> LlamaConfig:
    """The config of :func:`tiny_llama`, for a test that needs the config itself (another head, a saved folder)."""
    return LlamaConfig(**TINY_LLAMA | dict(vocab_size=vocab_size) | overrides)


def tiny_llama(seed: int = 0, vocab_size: int = 64, **config) -> LlamaForCausalLM:
    """A 2-layer Llama of width 32, seeded with ``seed``; ``config`` overrides any ``LlamaConfig`` setting."""
    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_llama_config(vocab_size, **config)).eval()


def token_ids_of(tokenizer) -> dict:
    """The vocabulary size and special token ids of ``tokenizer``, as ``tiny_llama`` overrides."""
    return dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)


def save_tiny_fallback_model(cache: Path, tokenizer) -> dict:
    """A one-layer Llama of width 16 with ``tokenizer``, saved where the offline fallback looks in
    ``cache`` (``DPO_TUTORIAL_CACHE``), so that loading the bundled model gives this one; returns its
    weights. Used by the two-process script test and by ``.ci/gpu-profile`` on a CPU that emulates bf16."""
    model = tiny_llama(
        0,
        **token_ids_of(tokenizer),
        **ONE_LAYER_WIDTH_16,
        bos_token_id=tokenizer.bos_token_id,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
    )
    folder = cache / offline_cache_name()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {k: v.clone() for k, v in model.state_dict().items()}


def tiny_gpt2(seed: int = 0, vocab_size: int = 64):
    """Absolute position embeddings: wrong position ids under left padding show up here."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=4,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return GPT2LMHeadModel(config).eval()


class TinyTokenizer:
    pad_token_id, eos_token_id = 0, 2

    def save_pretrained(self, folder):
        pass


def make_pairs(n=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = lambda k: torch.randint(3, 60, (k,), generator=gen).tolist()
    return [TokenizedPair(ids(4), ids(3) + [2], ids(5) + [2]) for _ in range(n)]


def small_vocab_chat_tokenizer(rows: list[dict], like, vocab_size: int = 512):
    """A byte-level BPE tokenizer of ``vocab_size`` tokens learned from conversational preference
    ``rows`` (every message of every field), with the special
    tokens and chat template of ``like`` (SmolLM2's). Under bf16 autocast on a CPU without native
    bf16, the LM head over SmolLM2's 49,152 tokens dominates a tiny model's step; 512 cuts it ~100x."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [like.unk_token or "<|endoftext|>", like.bos_token, like.eos_token]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet)
    texts = [message["content"] for row in rows for key in ("prompt", "chosen", "rejected") for message in row[key]]
    bpe.train_from_iterator([*texts, like.chat_template], trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, unk_token=specials[0], bos_token=like.bos_token, eos_token=like.eos_token
    )
    tokenizer.chat_template = like.chat_template
    return tokenizer


class Planted:
    """A pickled object that creates ``marker`` when unpickled, as a planted checkpoint's payload would run code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))  # not open(): a file left open warns (ResourceWarning)


def plant_checkpoint(folder, marker) -> None:
    """Write ``folder/state.pt`` whose unpickling would create ``marker``."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"fingerprint": "planted", "payload": Planted(marker)}, folder / "state.pt")
