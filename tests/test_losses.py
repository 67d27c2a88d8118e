import math

import pytest
import torch
import torch.nn.functional as F

from dpo_utils.losses import LOSS_TYPES, dpo_loss


def logps(*values):
    return torch.tensor(values, dtype=torch.float64)


def reference_dpo(pc, pr, rc, rr, beta):
    """The paper's formula written out for one pair with Python floats."""
    u = beta * ((pc - rc) - (pr - rr))
    return -math.log(1 / (1 + math.exp(-u)))


def test_sigmoid_matches_paper_formula_and_sign():
    out = dpo_loss(logps(-5.0), logps(-9.0), logps(-6.0), logps(-7.0), beta=0.5)
    # chosen gained 1 nat, rejected lost 2: margin = 0.5 * 3 = 1.5
    assert out.losses.item() == pytest.approx(reference_dpo(-5, -9, -6, -7, 0.5))
    assert out.losses.item() == pytest.approx(math.log1p(math.exp(-1.5)))
    assert out.chosen_rewards.item() == pytest.approx(0.5)
    assert out.rejected_rewards.item() == pytest.approx(-1.0)
    assert out.margins.item() == pytest.approx(1.5)


def test_loss_is_log2_when_policy_equals_reference():
    x = logps(-3.0, -10.0)
    out = dpo_loss(x, x + 1, x, x + 1, beta=0.1)
    assert torch.allclose(out.losses, torch.full((2,), math.log(2), dtype=torch.float64))


def test_gradient_raises_chosen_and_lowers_rejected():
    pc, pr = logps(-5.0).requires_grad_(), logps(-5.0).requires_grad_()
    dpo_loss(pc, pr, logps(-5.0), logps(-5.0), beta=0.1).losses.sum().backward()
    # gradient descent steps against the gradient: chosen must go up, rejected down
    assert pc.grad.item() < 0 < pr.grad.item()
    assert pc.grad.item() == pytest.approx(-0.1 * 0.5)  # -beta * sigmoid(-u), u = 0


def test_label_smoothing_is_cdpo_mixture():
    args = (logps(-4.0), logps(-6.0), logps(-5.0), logps(-5.0))
    u = 0.2 * 2.0
    out = dpo_loss(*args, beta=0.2, label_smoothing=0.1)
    expected = -0.9 * F.logsigmoid(torch.tensor(u)) - 0.1 * F.logsigmoid(torch.tensor(-u))
    assert out.losses.item() == pytest.approx(expected.item())


def test_robust_is_unbiased_form():
    args = (logps(-4.0), logps(-6.0), logps(-5.0), logps(-5.0))
    u = torch.tensor(0.2 * 2.0, dtype=torch.float64)
    eps = 0.2
    out = dpo_loss(*args, beta=0.2, loss_type="robust", label_smoothing=eps)
    expected = (-(1 - eps) * F.logsigmoid(u) + eps * F.logsigmoid(-u)) / (1 - 2 * eps)
    assert out.losses.item() == pytest.approx(expected.item())
    plain = dpo_loss(*args, beta=0.2, loss_type="robust")
    assert plain.losses.item() == pytest.approx(dpo_loss(*args, beta=0.2).losses.item())


def test_ipo_averages_each_log_ratio_over_its_tokens_like_trl():
    """TRL 1.16: ((h_w / |y_w| - h_l / |y_l|) - 1 / (2 beta))^2, written out with floats."""
    beta, (pc, pr, rc, rr), (n_w, n_l) = 0.25, (-5.0, -9.0, -6.0, -7.0), (3, 7)
    expected = ((pc - rc) / n_w - (pr - rr) / n_l - 1 / (2 * beta)) ** 2
    out = dpo_loss(
        logps(pc),
        logps(pr),
        logps(rc),
        logps(rr),
        beta=beta,
        loss_type="ipo",
        chosen_lengths=logps(n_w),
        rejected_lengths=logps(n_l),
    )
    assert out.losses.item() == pytest.approx(expected)
    assert out.chosen_rewards.item() == pytest.approx(beta * (pc - rc))  # rewards stay summed, as TRL logs them


def test_ipo_sum_uses_summed_log_ratios_and_ignores_lengths():
    beta, (pc, pr, rc, rr) = 0.25, (-5.0, -9.0, -6.0, -7.0)
    expected = ((pc - rc) - (pr - rr) - 1 / (2 * beta)) ** 2
    for lengths in [(None, None), (logps(3), logps(7))]:
        out = dpo_loss(
            logps(pc),
            logps(pr),
            logps(rc),
            logps(rr),
            beta=beta,
            loss_type="ipo_sum",
            chosen_lengths=lengths[0],
            rejected_lengths=lengths[1],
        )
        assert out.losses.item() == pytest.approx(expected)


def test_the_two_ipo_forms_differ_unless_completions_are_one_token():
    args = logps(-5.0), logps(-9.0), logps(-6.0), logps(-7.0)
    ipo = lambda kind, n_w, n_l: dpo_loss(
        *args, beta=0.25, loss_type=kind, chosen_lengths=logps(n_w), rejected_lengths=logps(n_l)
    ).losses.item()
    assert ipo("ipo", 1, 1) == pytest.approx(ipo("ipo_sum", 1, 1))
    assert ipo("ipo", 3, 7) == pytest.approx((1 / 3 + 2 / 7 - 2) ** 2) and ipo("ipo_sum", 3, 7) == pytest.approx(1.0)


def test_ipo_is_zero_at_its_target_per_token_gap():
    beta, n = 0.25, 4
    target = 1 / (2 * beta)  # per-token log-ratio gap where IPO's squared loss vanishes
    zero = logps(0.0)
    out = dpo_loss(
        logps(n * target),
        zero,
        zero,
        zero,
        beta=beta,
        loss_type="ipo",
        chosen_lengths=logps(n),
        rejected_lengths=logps(2),
    )
    assert out.losses.item() == pytest.approx(0.0)
    out = dpo_loss(
        zero, zero, zero, zero, beta=beta, loss_type="ipo", chosen_lengths=logps(n), rejected_lengths=logps(2)
    )
    assert out.losses.item() == pytest.approx(target**2)


def test_ipo_without_lengths_is_refused():
    x = logps(-1.0)
    with pytest.raises(ValueError, match="pass chosen_lengths and rejected_lengths"):
        dpo_loss(x, x, x, x, loss_type="ipo")


def test_hinge_is_zero_beyond_margin_one():
    out = dpo_loss(logps(20.0, 0.0), logps(0.0, 0.0), logps(0.0, 0.0), logps(0.0, 0.0), beta=0.1, loss_type="hinge")
    assert out.losses.tolist() == pytest.approx([0.0, 1.0])


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_every_variant_prefers_ranking_chosen_higher(loss_type):
    n = dict(chosen_lengths=logps(2), rejected_lengths=logps(2))
    right = dpo_loss(logps(-1.0), logps(-3.0), logps(-2.0), logps(-2.0), beta=0.5, loss_type=loss_type, **n)
    wrong = dpo_loss(logps(-3.0), logps(-1.0), logps(-2.0), logps(-2.0), beta=0.5, loss_type=loss_type, **n)
    assert right.losses.item() < wrong.losses.item()


def test_bad_arguments_are_explained():
    x = logps(-1.0)
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(x, x, x, x, loss_type="dpo")
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(x, x, x, x, beta=0)
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(x, x, x, x, label_smoothing=0.5)
    with pytest.raises(ValueError, match="ref_rejected_logps contains NaN"):
        dpo_loss(x, x, x, logps(float("nan")))


def test_hand_derived_gradient_matches_autograd():
    """dL/dlogpi_w = -beta * sigmoid(r_l - r_w) and dL/dlogpi_l = +beta * sigmoid(r_l - r_w)."""
    torch.manual_seed(0)
    pc, pr = (
        torch.randn(6, dtype=torch.float64, requires_grad=True),
        torch.randn(6, dtype=torch.float64, requires_grad=True),
    )
    rc, rr, beta = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64), 0.3
    out = dpo_loss(pc, pr, rc, rr, beta=beta)
    out.losses.sum().backward()
    weight = torch.sigmoid(out.rejected_rewards - out.chosen_rewards)
    assert torch.allclose(pc.grad, -beta * weight)
    assert torch.allclose(pr.grad, beta * weight)
