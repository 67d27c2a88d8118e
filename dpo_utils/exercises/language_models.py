"""The exercises of notebooks 07-12 (the language-model half): expected answers computed from
``dpo_utils``' own functions, never typed in."""

import torch

from dpo_utils.exercises.registry import exercise
from dpo_utils.failure_modes import moving_reference_dpo
from dpo_utils.preferences import expected_pair_counts
from dpo_utils.runtime.architectures import architecture_config
from dpo_utils.tabular import make_problem

# --- 08 ---


@exercise(
    "08.1",
    hint="a rank-r adapter on a d_in -> d_out layer is A (r x d_in) and B (d_out x r); a block has seven "
    "linear layers (q, k, v, o, gate, up, down), and k and v map to num_key_value_heads * head_dim",
)
def _expected_08_1():
    config = architecture_config("smollm2-135m")
    head_dim = config.hidden_size // config.num_attention_heads
    hidden, inner = config.hidden_size, config.intermediate_size
    query, key_value = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    shapes = [(hidden, query), (hidden, key_value), (hidden, key_value), (query, hidden)]
    shapes += [(hidden, inner), (hidden, inner), (inner, hidden)]
    return 16 * config.num_hidden_layers * sum(d_in + d_out for d_in, d_out in shapes)


def _gradient_lists() -> list[tuple]:
    """Gradients whose magnitudes spread from 1e-12 to 1e-1, some exact zeros, at three loss scales."""
    generator = torch.Generator().manual_seed(8)
    tensors = []
    for shape in ((64, 32), (300,), (7, 7, 7)):
        magnitude = 10 ** (-12 + 11 * torch.rand(shape, generator=generator))
        sign = torch.where(torch.rand(shape, generator=generator) < 0.5, -1.0, 1.0)
        keep = torch.rand(shape, generator=generator) < 0.9
        tensors.append(magnitude * sign * keep)
    return [(tensors, 1.0), (tensors, 1024.0), (tensors[1:], 65536.0)]


@exercise(
    "08.3",
    hint="multiply in fp32, cast with .to(torch.float16), and count the elements that were not 0 before "
    "and are 0 after, out of all the elements that were not 0",
    inputs=_gradient_lists,
)
def _expected_08_3(gradients, scale):
    values = torch.cat([g.detach().float().flatten() for g in gradients])
    nonzero = values != 0
    flushed = (values * scale).to(torch.float16) == 0
    return (flushed & nonzero).sum().item() / nonzero.sum().item()


# --- 10 ---


@exercise("10.1", hint="2 sequences a pair x pairs x tokens x vocabulary entries, each of 2 bytes in bf16")
def _expected_10_1():
    return 2 * 4 * 1024 * architecture_config("qwen2.5-0.5b").vocab_size * 2 / 1e9


@exercise(
    "10.2",
    hint="run moving_reference_dpo at beta = 2.0 and read the KL of its last step; "
    "then compare with beta = 0.5: what does Adam do to a gradient multiplied by a constant?",
)
def _expected_10_2():
    problem = make_problem(seed=0)
    return moving_reference_dpo(problem, expected_pair_counts(problem.reward), beta=2.0, steps=400)[1][-1][1]


def _feature_tables() -> list[tuple[torch.Tensor]]:
    """The notebook's four responses with unseen A at [0, 0.1], then random tables of 5 responses and 3 features."""
    generator = torch.Generator().manual_seed(10)
    shown = torch.tensor([[1.0, 0.2], [1.0, -0.2], [0.0, 0.1], [0.0, -1.0]])
    return [(shown,)] + [(torch.randn(5, 3, generator=generator),) for _ in range(4)]


@exercise(
    "10.3",
    hint="the gradient of log pi(chosen) - log pi(rejected) with respect to theta is f_chosen - f_rejected, "
    "whatever theta is: so theta only ever moves along that direction",
    inputs=_feature_tables,
)
def _expected_10_3(features):
    return torch.argmax(features @ (features[0] - features[1]))
