"""Our calls into peft and TRL emit no FutureWarning about transformers' old checkpointing names."""

import re
import warnings

import pytest
import transformers

from dpo_utils.lora import attach_lora, load_lora_adapter
from dpo_utils.runtime.models import CHECKPOINTING_RENAMES, quiet_checkpointing_renames
from dpo_utils.trl_check import trl_dpo_loss
from tests.helpers import ONE_LAYER_WIDTH_16, tiny_llama, token_ids_of


def rename_warnings(call):
    """Run ``call()`` with every warning recorded; return the checkpointing-rename ones."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [str(w.message) for w in caught if re.match(CHECKPOINTING_RENAMES, str(w.message))]


def test_the_pattern_matches_the_messages_transformers_writes():
    model = tiny_llama()
    if not hasattr(model, "is_activation_checkpointing"):
        pytest.skip(f"transformers {transformers.__version__} has not renamed gradient checkpointing yet")
    assert rename_warnings(lambda: model.is_gradient_checkpointing) == [
        "`is_gradient_checkpointing` is deprecated and will be removed in v6. "
        "Use `is_activation_checkpointing` instead."
    ]

    def quietly():
        with quiet_checkpointing_renames():
            return model.is_gradient_checkpointing

    assert rename_warnings(quietly) == []


def test_the_filter_hides_nothing_else():
    with quiet_checkpointing_renames(), pytest.warns(FutureWarning, match="something else"):
        warnings.warn("`something else` is deprecated", FutureWarning, stacklevel=2)


def test_attaching_saving_and_loading_a_lora_adapter_is_quiet(tmp_path):
    assert rename_warnings(lambda: attach_lora(tiny_llama(), rank=4).save_pretrained(tmp_path)) == []
    assert rename_warnings(lambda: load_lora_adapter(tiny_llama(), tmp_path)) == []


def test_trls_loss_is_computed_quietly(tokenizer):
    policy, reference = (
        tiny_llama(seed, **token_ids_of(tokenizer), **ONE_LAYER_WIDTH_16, tie_word_embeddings=False) for seed in (0, 1)
    )
    rows = [{"prompt": "Rate the film.", "chosen": "Great.", "rejected": "Dull and long."}]
    assert rename_warnings(lambda: trl_dpo_loss(policy, reference, tokenizer, rows, beta=0.1)) == []
