"""The exercises of notebooks 07-12 (the language-model half): expected answers computed from
``dpo_utils``' own functions, never typed in."""

import torch

from dpo_utils.exercises.registry import exercise
from dpo_utils.failure_modes import moving_reference_dpo
from dpo_utils.preferences import expected_pair_counts
from dpo_utils.runtime.architectures import architecture_config
from dpo_utils.tabular import make_problem

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
