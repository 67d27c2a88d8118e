r"""The DPO loss family, computed from per-sequence log-probs.

All losses take the summed (or length-normalised) log-probs of the chosen and rejected
completions under the policy :math:`\pi_\theta` and the frozen reference :math:`\pi_{ref}`.
Write the log-ratios

.. math::
    h_w = \log\pi_\theta(y_w|x) - \log\pi_{ref}(y_w|x), \qquad
    h_l = \log\pi_\theta(y_l|x) - \log\pi_{ref}(y_l|x),

and :math:`u = \beta\,(h_w - h_l)`. The implicit rewards are :math:`\hat r_w = \beta h_w`
and :math:`\hat r_l = \beta h_l`, so :math:`u = \hat r_w - \hat r_l` is the reward margin.

========  ================================================================  =======================
name      per-example loss                                                  source
========  ================================================================  =======================
sigmoid   :math:`-(1-\varepsilon)\log\sigma(u) - \varepsilon\log\sigma(-u)`   Rafailov et al. 2023
          (with :math:`\varepsilon>0` this is cDPO, conservative DPO)       (cDPO: Mitchell 2023)
robust    :math:`\frac{-(1-\varepsilon)\log\sigma(u) + \varepsilon\log\sigma(-u)}{1-2\varepsilon}`
                                                                            Chowdhury et al. 2024
ipo       :math:`\left(h_w - h_l - \frac{1}{2\beta}\right)^2`                 Azar et al. 2023
hinge     :math:`\max(0,\ 1 - u)`                                           Zhao et al. 2023 (SLiC)
========  ================================================================  =======================

Conventions follow TRL's ``DPOTrainer`` so numbers compare one to one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

LOSS_TYPES = ("sigmoid", "robust", "ipo", "hinge")


@dataclass
class DPOLossOutput:
    """Per-example losses and the implicit rewards :math:`\\beta(\\log\\pi - \\log\\pi_{ref})`."""

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor

    @property
    def margins(self) -> torch.Tensor:
        """Implicit reward margin, chosen minus rejected."""
        return self.chosen_rewards - self.rejected_rewards


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> DPOLossOutput:
    r"""Per-example DPO-family losses and implicit rewards.

    Args:
        policy_chosen_logps: :math:`\log\pi_\theta(y_w|x)`, shape ``(batch,)``.
        policy_rejected_logps: :math:`\log\pi_\theta(y_l|x)`, shape ``(batch,)``.
        ref_chosen_logps: :math:`\log\pi_{ref}(y_w|x)`, shape ``(batch,)``.
        ref_rejected_logps: :math:`\log\pi_{ref}(y_l|x)`, shape ``(batch,)``.
        beta: strength :math:`\beta` of the KL constraint (larger = stay closer to the reference).
        loss_type: one of ``sigmoid``, ``robust``, ``ipo``, ``hinge`` (formulas in the module doc).
        label_smoothing: :math:`\varepsilon`, the assumed probability that a label is flipped
            (``sigmoid`` and ``robust`` only; must be below 0.5).

    Returns:
        :class:`DPOLossOutput` with ``losses``, ``chosen_rewards``, ``rejected_rewards``;
        rewards are detached, the loss carries gradients.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type={loss_type!r}: choose one of {LOSS_TYPES}")
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    if label_smoothing and loss_type not in ("sigmoid", "robust"):
        raise ValueError(f"label_smoothing is not defined for loss_type={loss_type!r}")

    _check_no_nan(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
    )
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    logits = chosen_logratios - rejected_logratios
    u = beta * logits
    eps = label_smoothing

    if loss_type == "sigmoid":
        losses = -(1 - eps) * F.logsigmoid(u) - eps * F.logsigmoid(-u)
    elif loss_type == "robust":
        losses = (-(1 - eps) * F.logsigmoid(u) + eps * F.logsigmoid(-u)) / (1 - 2 * eps)
    elif loss_type == "ipo":
        losses = (logits - 1 / (2 * beta)) ** 2
    else:  # hinge
        losses = torch.relu(1 - u)

    return DPOLossOutput(
        losses=losses,
        chosen_rewards=(beta * chosen_logratios).detach(),
        rejected_rewards=(beta * rejected_logratios).detach(),
    )


def _check_no_nan(**logps: torch.Tensor) -> None:
    """Fail loudly instead of training on NaN (usually a completion truncated to nothing)."""
    for name, values in logps.items():
        if torch.isnan(values).any():
            raise ValueError(
                f"{name} contains NaN: is a completion empty after truncation or masking?"
            )
