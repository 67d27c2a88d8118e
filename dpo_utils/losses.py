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
ipo       :math:`\left(\frac{h_w}{|y_w|} - \frac{h_l}{|y_l|} - \frac{1}{2\beta}\right)^2`
          (log-ratios averaged per completion token, as in TRL)             Azar et al. 2023
ipo_sum   :math:`\left(h_w - h_l - \frac{1}{2\beta}\right)^2` (summed)      Azar et al., Eq. 17
hinge     :math:`\max(0,\ 1 - u)`                                           Zhao et al. 2023 (SLiC)
========  ================================================================  =======================

Only ``sigmoid`` with :math:`\varepsilon > 0` (cDPO) keeps margins finite on a pair seen one way
round: its loss is smallest at :math:`u = \log\frac{1-\varepsilon}{\varepsilon}`. ``robust``
is unbiased for the clean loss under label noise, but it is **not bounded below**: as
:math:`u \to \infty` its loss behaves like :math:`-\frac{\varepsilon}{1-2\varepsilon}\,u`
(slope :math:`-0.125` at :math:`\varepsilon = 0.1`), so on a pair seen once it has no minimum and
keeps pushing the margin. Its expected loss has a finite minimiser only for a pair whose observed
win rate :math:`p` lies strictly between :math:`\varepsilon` and :math:`1-\varepsilon`; there
:math:`\sigma(u^*) = (p-\varepsilon)/(1-2\varepsilon)`, the noise-free win rate. (``ipo`` targets
a gap of :math:`\frac{1}{2\beta}` nats *per token* between the average log-ratios, ``ipo_sum`` the
same gap between the *summed* ones, about :math:`|y|` times smaller per token; ``hinge`` is zero for
every :math:`u \ge 1`; plain DPO falls towards 0 as :math:`u \to \infty`: no minimum either, but
bounded below.)

The two IPO forms coincide when both completions are one token long (the tabular problems of
:mod:`dpo_utils.tabular`). On text they are different losses at the same :math:`\beta`: the summed
target :math:`\frac{1}{2\beta}` spreads over a whole completion, the averaged one asks for it on
every token. TRL's ``loss_type="ipo"`` is the averaged form; its source says the IPO authors
confirmed it is the one their paper's results used.

Two **reference-free** variants score each completion by its *average* token log-prob
:math:`\bar\ell = \log\pi_\theta(y|x)/|y|` (no :math:`\pi_{ref}`, no second model):

========  ================================================================  =======================
simpo     :math:`-\log\sigma\big(\beta(\bar\ell_w - \bar\ell_l) - \gamma\big)`           Meng et al. 2024
orpo      :math:`-\bar\ell_w - \lambda\log\sigma\big(\log\frac{odds_w}{odds_l}\big)`,
          :math:`odds = e^{\bar\ell}/(1-e^{\bar\ell})`                            Hong et al. 2024
========  ================================================================  =======================

and :func:`preference_loss` adds the third: DPO plus a weighted NLL term on the chosen
completion (``nll_weight``; "RPO", Pang et al. 2024), which keeps chosen log-probs from falling.

Conventions follow TRL 1.16 (``DPOTrainer``; ``CPOTrainer`` for SimPO; ``ORPOTrainer``): on the same
rows, ``sigmoid`` (with :math:`\varepsilon = 0`), ``robust``, ``hinge`` and ``ipo`` give the per-pair
losses and implicit rewards of TRL's loss of that name (``tests/test_trl_parity.py`` runs
``DPOTrainer`` itself for ``sigmoid`` and ``ipo``). Two have no TRL 1.16 counterpart: cDPO
(TRL's ``sigmoid`` ignores ``label_smoothing``) and ``ipo_sum``.
"""

from __future__ import annotations

import contextvars
import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

LOSS_TYPES = ("sigmoid", "robust", "ipo", "ipo_sum", "hinge")
OBJECTIVES = ("dpo", "sft", "simpo", "orpo")  # what :func:`preference_loss` can train


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
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
) -> DPOLossOutput:
    r"""Per-example DPO-family losses and implicit rewards.

    Args:
        policy_chosen_logps: :math:`\log\pi_\theta(y_w|x)`, shape ``(batch,)``.
        policy_rejected_logps: :math:`\log\pi_\theta(y_l|x)`, shape ``(batch,)``.
        ref_chosen_logps: :math:`\log\pi_{ref}(y_w|x)`, shape ``(batch,)``.
        ref_rejected_logps: :math:`\log\pi_{ref}(y_l|x)`, shape ``(batch,)``.
        beta: strength :math:`\beta` of the KL constraint (larger = stay closer to the reference).
        loss_type: one of ``sigmoid``, ``robust``, ``ipo``, ``ipo_sum``, ``hinge`` (formulas in the
            module doc).
        label_smoothing: :math:`\varepsilon`, the assumed probability that a label is flipped
            (``sigmoid`` and ``robust`` only; must be below 0.5).
            ``robust`` with :math:`\varepsilon > 0` is unbounded below on one-way pairs (module doc).
        chosen_lengths, rejected_lengths: completion lengths in tokens, shape ``(batch,)``; ``ipo``
            needs them (it averages each log-ratio over its completion's tokens, counts below 1
            taken as 1 like TRL), the other losses ignore them.

    Returns:
        :class:`DPOLossOutput` with ``losses``, ``chosen_rewards``, ``rejected_rewards``;
        rewards are detached, the loss carries gradients.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type={loss_type!r}: choose one of {LOSS_TYPES}")
    _check_positive(beta=beta)
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
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError(
                "loss_type='ipo' averages log-ratios per token: pass chosen_lengths and rejected_lengths "
                "(or use loss_type='ipo_sum' for the summed form)"
            )
        per_token_gap = chosen_logratios / chosen_lengths.clamp(min=1) - rejected_logratios / rejected_lengths.clamp(
            min=1
        )
        losses = (per_token_gap - 1 / (2 * beta)) ** 2
    elif loss_type == "ipo_sum":
        losses = (logits - 1 / (2 * beta)) ** 2
    else:  # hinge
        losses = torch.relu(1 - u)

    return DPOLossOutput(
        losses=losses,
        chosen_rewards=(beta * chosen_logratios).detach(),
        rejected_rewards=(beta * rejected_logratios).detach(),
    )


def simpo_loss(
    chosen_avg_logps: torch.Tensor, rejected_avg_logps: torch.Tensor, beta: float = 2.0, gamma: float = 0.5
) -> DPOLossOutput:
    r"""SimPO: :math:`-\log\sigma(\beta(\bar\ell_w - \bar\ell_l) - \gamma)` on average log-probs.

    No reference model; the margin :math:`\gamma` asks the chosen average log-prob to beat the
    rejected one by :math:`\gamma/\beta` nats per token. Rewards are :math:`\beta\bar\ell`.
    (TRL: ``CPOTrainer`` with ``loss_type="simpo"``, ``simpo_gamma=gamma``, ``cpo_alpha=0``.)
    """
    _check_positive(beta=beta)
    _check_no_nan(chosen_avg_logps=chosen_avg_logps, rejected_avg_logps=rejected_avg_logps)
    losses = -F.logsigmoid(beta * (chosen_avg_logps - rejected_avg_logps) - gamma)
    return DPOLossOutput(losses, (beta * chosen_avg_logps).detach(), (beta * rejected_avg_logps).detach())


def orpo_loss(chosen_avg_logps: torch.Tensor, rejected_avg_logps: torch.Tensor, lam: float = 0.1) -> DPOLossOutput:
    r"""ORPO: NLL of the chosen completion plus :math:`\lambda` times the odds-ratio loss.

    Both terms use average token log-probs :math:`\bar\ell`; the odds of a completion are
    :math:`e^{\bar\ell}/(1 - e^{\bar\ell})`. No reference model and no separate SFT stage.
    Rewards are :math:`\lambda\bar\ell` (TRL's ``ORPOTrainer`` logs the same, with ``beta`` = λ).
    """
    _check_positive(lam=lam)
    _check_no_nan(chosen_avg_logps=chosen_avg_logps, rejected_avg_logps=rejected_avg_logps)
    log_odds = (chosen_avg_logps - rejected_avg_logps) - (_log1mexp(chosen_avg_logps) - _log1mexp(rejected_avg_logps))
    losses = -chosen_avg_logps - lam * F.logsigmoid(log_odds)
    return DPOLossOutput(losses, (lam * chosen_avg_logps).detach(), (lam * rejected_avg_logps).detach())


# The settings of a DPOConfig that preference_loss takes, by name
LOSS_SETTINGS = ("beta", "loss_type", "label_smoothing", "nll_weight", "simpo_gamma")


def preference_loss(
    objective: str,
    chosen_logps,
    rejected_logps,
    chosen_lengths,
    rejected_lengths,
    *,
    ref_chosen_logps=None,
    ref_rejected_logps=None,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    nll_weight: float = 0.0,
    simpo_gamma: float = 0.5,
) -> DPOLossOutput:
    r"""One entry point for every objective, from summed log-probs and completion lengths (tokens).

    ``objective``: ``dpo`` (:func:`dpo_loss` with ``loss_type``; plus ``nll_weight`` times the
    chosen per-token NLL when ``nll_weight > 0``), ``sft`` (chosen per-token NLL: Preferred-FT),
    ``simpo`` (:func:`simpo_loss`, ``beta`` and ``simpo_gamma``) or ``orpo`` (:func:`orpo_loss`,
    ``beta`` as :math:`\lambda`). Only ``dpo`` uses the reference log-probs; its ``loss_type="ipo"``
    also uses the lengths.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r}: choose one of {OBJECTIVES}")
    chosen_avg, rejected_avg = chosen_logps / chosen_lengths, rejected_logps / rejected_lengths
    if objective == "simpo":
        return simpo_loss(chosen_avg, rejected_avg, beta, simpo_gamma)
    if objective == "orpo":
        return orpo_loss(chosen_avg, rejected_avg, beta)
    if objective == "sft":
        zero = torch.zeros_like(chosen_avg).detach()
        return DPOLossOutput(-chosen_avg, zero, zero)
    if ref_chosen_logps is None or ref_rejected_logps is None:
        raise ValueError("objective='dpo' needs the reference log-probs")
    out = dpo_loss(
        chosen_logps,
        rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        beta,
        loss_type,
        label_smoothing,
        chosen_lengths,
        rejected_lengths,
    )
    if nll_weight:
        out.losses = out.losses - nll_weight * chosen_avg
    return out


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    r""":math:`\log(1 - e^x)` for :math:`x < 0`, stable on both sides of :math:`-\log 2`."""
    return torch.where(x < -math.log(2), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")


_NON_FINITE_ALLOWED = contextvars.ContextVar("non_finite_allowed", default=False)


@contextmanager
def allow_non_finite():
    """Within this block the loss functions let NaN and inf log-probs through, for a caller that
    detects them and skips the step (:class:`~dpo_utils.trainer.DPOTrainer` does); outside it they raise."""
    token = _NON_FINITE_ALLOWED.set(True)
    try:
        yield
    finally:
        _NON_FINITE_ALLOWED.reset(token)


def _check_no_nan(**logps: torch.Tensor) -> None:
    """Fail loudly instead of computing a loss from NaN or inf log-probs (unless :func:`allow_non_finite`)."""
    if _NON_FINITE_ALLOWED.get():
        return
    for name, values in logps.items():
        bad = ~torch.isfinite(values)
        if bad.any():
            kind = "NaN" if torch.isnan(values).any() else "inf"
            raise ValueError(
                f"{name} contains {kind} (at index {bad.nonzero()[0].tolist()}): "
                "a numerical fault upstream (an fp16 overflow, a diverged model), "
                "or log-probs averaged over an empty completion (0/0). DPOTrainer skips such "
                "a step; when calling the loss yourself, find where these log-probs came from."
            )
