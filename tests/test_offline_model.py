"""The bundled SmolLM2 loads offline, with a pad token that is not EOS, and generates text."""

import pytest
import torch

import dpo_utils.runtime.model_cache
from dpo_utils.runtime.model_cache import offline_model_dir
from dpo_utils.runtime.models import load_model_and_tokenizer

pytestmark = pytest.mark.lowest_versions  # .ci/min-versions runs these


def test_offline_model_loads_without_converting_again_and_generates(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline_model_dir()  # converts once (~20 s) when the cache is empty

    def convert_again(*args):
        raise AssertionError("the converted model was in the cache, yet it was converted again")

    monkeypatch.setattr(dpo_utils.runtime.model_cache, "convert_gguf", convert_again)
    model, tok = load_model_and_tokenizer("HuggingFaceTB/SmolLM2-135M-Instruct", device="cpu")
    assert tok.pad_token_id != tok.eos_token_id
    assert getattr(model.config, "quantization_config", None) is None
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2+2?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    text = tok.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert len(text.strip()) > 0


def test_missing_model_without_fallback_names_the_problem(monkeypatch):
    import pytest

    from dpo_utils.runtime.model_cache import ModelNotAvailableError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError, match="not a local folder"):
        load_model_and_tokenizer("nobody/no-such-model", fallback=False)
