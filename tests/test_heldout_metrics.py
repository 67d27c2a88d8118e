"""Held-out pair metrics: the DPO loss, accuracy and margins of pairs the policy did not train on."""

import pytest
import torch

from dpo_utils.evaluation import heldout_pair_margins, heldout_preference_metrics
from dpo_utils.losses import dpo_loss
from dpo_utils.reference import compute_reference_logprobs
from tests.helpers import make_pairs, tiny_llama

pytestmark = pytest.mark.lowest_versions  # .ci/min-versions runs these


def test_heldout_metrics_are_the_dpo_loss_of_policy_and_reference_logprobs():
    policy, reference, pairs = tiny_llama(seed=1), tiny_llama(seed=2), make_pairs()
    policy_logps = compute_reference_logprobs(policy, pairs, 0)
    reference_logps = compute_reference_logprobs(reference, pairs, 0)
    out = dpo_loss(*policy_logps.unbind(-1), *reference_logps.unbind(-1), beta=0.3)
    metrics = heldout_preference_metrics(policy, pairs, 0, beta=0.3, reference=reference)
    assert metrics["loss"] == pytest.approx(out.losses.mean().item(), abs=1e-6)
    assert metrics["accuracy"] == pytest.approx((out.margins > 0).float().mean().item())
    assert metrics["margin"] == pytest.approx(out.margins.mean().item(), abs=1e-6) and metrics["n"] == len(pairs)
    margins = heldout_pair_margins(policy, pairs, 0, beta=0.3, reference=reference)
    assert torch.allclose(margins, out.margins, atol=1e-6)
    assert heldout_preference_metrics(reference, pairs, 0, beta=0.3, reference=reference)["margin"] == 0
