"""Two DPO failures reproduced exactly, on policies small enough to see whole (notebook 10):

- a "reference" recomputed from the current policy, so the logged loss stays at log 2 while the
  policy walks away from the true reference;
- likelihood displacement: chosen and rejected both lose probability to a response no pair names.
"""

import torch

from dpo_utils.losses import preference_loss
from dpo_utils.tabular import TabularProblem, kl_divergence, tabular_dpo_loss

# One row per response of a log-linear policy over two features: chosen and rejected share the
# first feature and differ a little in the second; "unseen A" loads on the second, "unseen B" against it.
DISPLACEMENT_FEATURES = torch.tensor([[1.0, 0.2], [1.0, -0.2], [0.0, 1.0], [0.0, -1.0]])
DISPLACEMENT_NAMES = ("chosen", "rejected", "unseen A", "unseen B")


def moving_reference_dpo(
    problem: TabularProblem, counts: torch.Tensor, beta: float, steps: int, lr: float = 0.05
) -> tuple[torch.Tensor, list[tuple[float, float]]]:
    """Adam on tabular DPO with the bug: the reference is the current policy, detached, at every step.
    Returns the final policy and, per step, the logged loss and the KL to the true reference."""
    logits = torch.log(problem.ref_probs).clone().requires_grad_(True)
    optimizer, trace = torch.optim.Adam([logits], lr=lr), []
    for _ in range(steps):
        moving_reference = torch.softmax(logits.detach(), -1)  # the bug: reference = current policy
        loss = tabular_dpo_loss(logits, moving_reference, counts, beta=beta)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        policy = torch.softmax(logits.detach(), -1)
        trace.append((loss.item(), kl_divergence(policy, problem.ref_probs).item()))
    return policy, trace


def train_log_linear(
    features: torch.Tensor = DISPLACEMENT_FEATURES, nll_weight: float = 0.0, steps: int = 300, lr: float = 0.5
) -> torch.Tensor:
    """DPO (beta 1, plus ``nll_weight`` times the chosen NLL) by SGD on one pair, response 0 over
    response 1, of the policy softmax(features @ theta) started at theta = 0, which is also the
    reference. Returns the probabilities of every response at each step, shape (steps, responses)."""
    theta = torch.zeros(features.shape[1], requires_grad=True)
    optimizer = torch.optim.SGD([theta], lr=lr)
    reference, one, trace = torch.log_softmax(features @ theta.detach(), 0), torch.ones(1), []
    for _ in range(steps):
        logp = torch.log_softmax(features @ theta, 0)
        out = preference_loss(
            "dpo",
            logp[:1],
            logp[1:2],
            one,
            one,
            ref_chosen_logps=reference[:1],
            ref_rejected_logps=reference[1:2],
            beta=1.0,
            nll_weight=nll_weight,
        )
        optimizer.zero_grad()
        out.losses.sum().backward()
        optimizer.step()
        trace.append(logp.detach().exp())
    return torch.stack(trace)
