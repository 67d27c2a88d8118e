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


def test_ipo_is_zero_at_target_margin():
    beta = 0.25
    target = 1 / (2 * beta)  # log-ratio difference where IPO's squared loss vanishes
    out = dpo_loss(logps(target), logps(0.0), logps(0.0), logps(0.0), beta=beta, loss_type="ipo")
    assert out.losses.item() == pytest.approx(0.0)
    out = dpo_loss(logps(0.0), logps(0.0), logps(0.0), logps(0.0), beta=beta, loss_type="ipo")
    assert out.losses.item() == pytest.approx(target**2)


def test_hinge_is_zero_beyond_margin_one():
    out = dpo_loss(logps(20.0, 0.0), logps(0.0, 0.0), logps(0.0, 0.0), logps(0.0, 0.0), beta=0.1, loss_type="hinge")
    assert out.losses.tolist() == pytest.approx([0.0, 1.0])


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_every_variant_prefers_ranking_chosen_higher(loss_type):
    right = dpo_loss(logps(-1.0), logps(-3.0), logps(-2.0), logps(-2.0), beta=0.5, loss_type=loss_type)
    wrong = dpo_loss(logps(-3.0), logps(-1.0), logps(-2.0), logps(-2.0), beta=0.5, loss_type=loss_type)
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
    pc, pr = torch.randn(6, dtype=torch.float64, requires_grad=True), torch.randn(6, dtype=torch.float64, requires_grad=True)
    rc, rr, beta = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64), 0.3
    out = dpo_loss(pc, pr, rc, rr, beta=beta)
    out.losses.sum().backward()
    weight = torch.sigmoid(out.rejected_rewards - out.chosen_rewards)
    assert torch.allclose(pc.grad, -beta * weight)
    assert torch.allclose(pr.grad, beta * weight)
