import pytest
import torch

from dpo_utils.runtime import config
from dpo_utils.runtime.models import ensure_pad_token, pick_device_and_dtype

pytestmark = pytest.mark.lowest_versions  # .ci/min-versions runs these


def test_pick_follows_size_variable(monkeypatch):
    monkeypatch.setenv("DPO_TUTORIAL_SIZE", "full")
    assert config.pick(100, 3) == 100
    monkeypatch.setenv("DPO_TUTORIAL_SIZE", "reduced")
    assert config.pick(100, 3) == 3
    monkeypatch.setenv("DPO_TUTORIAL_SIZE", "huge")
    with pytest.raises(ValueError, match="DPO_TUTORIAL_SIZE"):
        config.pick(1, 2)


def test_cpu_uses_float32():
    assert pick_device_and_dtype("cpu") == (torch.device("cpu"), torch.float32)


class FakeTokenizer:
    def __init__(self, vocab, pad, eos):
        self.vocab, self.pad_token, self.eos_token_id = vocab, pad, vocab[eos]
        self.added = None

    def get_vocab(self):
        return self.vocab

    @property
    def pad_token_id(self):
        return self.vocab.get(self.pad_token)

    def add_special_tokens(self, tokens):
        self.vocab[tokens["pad_token"]] = len(self.vocab)
        self.pad_token = tokens["pad_token"]

    def __len__(self):
        return len(self.vocab)


def test_pad_equal_to_eos_is_replaced():
    tok = FakeTokenizer({"<|endoftext|>": 0, "<|im_end|>": 2}, pad="<|im_end|>", eos="<|im_end|>")
    ensure_pad_token(tok)
    assert tok.pad_token == "<|endoftext|>" and tok.pad_token_id != tok.eos_token_id


def test_missing_pad_gets_a_new_token():
    tok = FakeTokenizer({"</s>": 0}, pad=None, eos="</s>")
    ensure_pad_token(tok)
    assert tok.pad_token == "<|pad|>" and tok.pad_token_id == 1


@pytest.mark.parametrize("wrap", ["plain", "lora"])
def test_activation_checkpointing_is_on_without_warnings_and_gives_the_same_gradients(wrap):
    import warnings

    from dpo_utils.lora import attach_lora
    from dpo_utils.runtime.models import enable_activation_checkpointing
    from tests.helpers import tiny_llama

    ids = torch.arange(1, 13).reshape(2, 6)
    grads = []
    for checkpointing in (False, True):
        model = tiny_llama() if wrap == "plain" else attach_lora(tiny_llama(), rank=4)
        model.train()
        if checkpointing:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # no FutureWarning from a renamed transformers method
                enable_activation_checkpointing(model)
            assert any(getattr(module, "gradient_checkpointing", False) is True for module in model.modules())
        model(input_ids=ids, labels=ids).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad]))
    assert grads[1].abs().sum() > 0 and torch.allclose(grads[0], grads[1], atol=1e-6)
