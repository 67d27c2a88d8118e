"""SimPO, ORPO and DPO + NLL: checked against TRL's implementations and against theory."""

import math
import os
from types import SimpleNamespace

import pytest

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
import torch

from dpo_utils.losses import OBJECTIVES, orpo_loss, preference_loss, simpo_loss
from dpo_utils.preferences import expected_pair_counts
from dpo_utils.tabular import kl_divergence, make_problem, total_variation, train_tabular_dpo
from dpo_utils.trainer import DPOConfig, DPOTrainer
from tests.helpers import TinyTokenizer, make_pairs, tiny_llama


def avg_logps(seed, n=6):
    gen = torch.Generator().manual_seed(seed)
    return -torch.rand(n, generator=gen, dtype=torch.float64) * 3 - 0.01  # in (-3.01, -0.01)


def test_simpo_matches_trl_cpo_trainer():
    from trl.experimental.cpo.cpo_trainer import CPOTrainer

    chosen, rejected = avg_logps(0), avg_logps(1)
    fake = SimpleNamespace(
        alpha=0.0,
        loss_type="simpo",
        simpo_gamma=0.7,
        beta=2.5,
        label_smoothing=0.0,
        accelerator=SimpleNamespace(device="cpu"),
    )
    trl_losses, trl_chosen, trl_rejected = CPOTrainer.cpo_loss(fake, chosen, rejected)
    ours = simpo_loss(chosen, rejected, beta=2.5, gamma=0.7)
    assert torch.allclose(ours.losses, trl_losses)
    assert torch.allclose(ours.chosen_rewards, trl_chosen) and torch.allclose(ours.rejected_rewards, trl_rejected)


def test_orpo_matches_trl_orpo_trainer():
    from trl.experimental.orpo.orpo_trainer import ORPOTrainer

    chosen, rejected = avg_logps(2), avg_logps(3)
    fake = SimpleNamespace(beta=0.25, accelerator=SimpleNamespace(device="cpu"))
    trl_terms, trl_chosen, _, _, _ = ORPOTrainer.odds_ratio_loss(fake, chosen, rejected)
    ours = orpo_loss(chosen, rejected, lam=0.25)
    # TRL returns lambda * log sigma(log odds ratio) and adds the NLL of chosen outside
    assert torch.allclose(ours.losses.float(), -chosen.float() - trl_terms, atol=1e-6)
    assert torch.allclose(ours.chosen_rewards.float(), trl_chosen)


def test_orpo_odds_ratio_by_hand_and_stable_near_zero():
    c, r = -0.2, -1.5
    odds = lambda logp: math.exp(logp) / (1 - math.exp(logp))
    by_hand = -c - 0.1 * math.log(1 / (1 + odds(r) / odds(c)))
    assert orpo_loss(torch.tensor([c]), torch.tensor([r]), lam=0.1).losses.item() == pytest.approx(by_hand, rel=1e-6)
    tiny = orpo_loss(torch.tensor([-1e-9], dtype=torch.float64), torch.tensor([-3.0], dtype=torch.float64))
    assert torch.isfinite(tiny.losses).all()


def test_dpo_with_nll_adds_the_chosen_per_token_nll():
    pc, pr, rc, rr = (torch.tensor([v], dtype=torch.float64) for v in (-12.0, -20.0, -13.0, -19.0))
    lengths = torch.tensor([4.0], dtype=torch.float64)
    plain = preference_loss("dpo", pc, pr, lengths, lengths, ref_chosen_logps=rc, ref_rejected_logps=rr, beta=0.1)
    with_nll = preference_loss(
        "dpo", pc, pr, lengths, lengths, ref_chosen_logps=rc, ref_rejected_logps=rr, beta=0.1, nll_weight=0.5
    )
    assert with_nll.losses.item() == pytest.approx(plain.losses.item() + 0.5 * 12.0 / 4)
    assert torch.equal(with_nll.margins, plain.margins)


def test_simpo_normalises_by_length_and_dpo_does_not():
    """Doubling a completion (same per-token log-prob, twice the tokens) changes DPO's sum, not SimPO's mean."""
    short, long_ = torch.tensor([-10.0]), torch.tensor([-20.0])
    n_short, n_long = torch.tensor([5.0]), torch.tensor([10.0])
    simpo = lambda c, nc: preference_loss("simpo", c, torch.tensor([-15.0]), nc, torch.tensor([5.0]), beta=2.0).losses
    assert torch.allclose(simpo(short, n_short), simpo(long_, n_long))
    zero = torch.zeros(1)
    dpo = lambda c: (
        preference_loss(
            "dpo", c, torch.tensor([-15.0]), n_short, n_short, ref_chosen_logps=zero, ref_rejected_logps=zero
        ).losses
    )
    assert not torch.allclose(dpo(short), dpo(long_))


def test_reference_free_objectives_need_no_reference_and_dpo_does():
    x, n = torch.tensor([-3.0]), torch.tensor([2.0])
    for objective in ("simpo", "orpo", "sft"):
        assert torch.isfinite(preference_loss(objective, x, x - 1, n, n).losses).all()
    with pytest.raises(ValueError, match="reference"):
        preference_loss("dpo", x, x, n, n)
    with pytest.raises(ValueError, match="objective"):
        preference_loss("kto", x, x, n, n)
    with pytest.raises(ValueError, match="nll_weight"):
        DPOConfig(objective="simpo", nll_weight=1.0)


def test_tabular_simpo_without_margin_lands_on_the_reference_free_optimum():
    """With no reference and one-token responses, SimPO's optimum is softmax(r / beta), not pi*."""
    pb, beta = make_problem(seed=0), 0.5
    policy, _ = train_tabular_dpo(
        pb, expected_pair_counts(pb.reward), beta, steps=3000, objective="simpo", simpo_gamma=0.0
    )
    reference_free = torch.softmax(pb.reward / beta, dim=-1)
    assert total_variation(policy, reference_free) < 1e-3
    assert kl_divergence(policy, pb.ref_probs) > 2 * kl_divergence(
        torch.softmax(torch.log(pb.ref_probs) + pb.reward / beta, -1), pb.ref_probs
    )


@pytest.mark.parametrize("objective", ["simpo", "orpo"])
def test_trainer_reference_free_objective_lowers_its_loss_without_reference(objective):
    model, pairs = tiny_llama(), make_pairs()
    config = DPOConfig(
        objective=objective, beta=2.0 if objective == "simpo" else 0.1, learning_rate=1e-2, batch_size=8, max_steps=4
    )
    trainer = DPOTrainer(model, TinyTokenizer(), pairs, config)
    losses = [trainer.train_step()["loss"] for _ in range(4)]
    assert trainer.reference_logps is None
    assert losses[-1] < losses[0]
    assert set(OBJECTIVES) >= {objective}


def test_trainer_nll_term_keeps_chosen_likelihood_higher():
    rows = {}
    for weight in (0.0, 2.0):
        model, pairs = tiny_llama(), make_pairs()
        trainer = DPOTrainer(
            model, TinyTokenizer(), pairs, DPOConfig(beta=0.1, learning_rate=1e-2, nll_weight=weight, max_steps=5)
        )
        rows[weight] = [trainer.train_step() for _ in range(5)][-1]
    assert rows[2.0]["logps/chosen"] > rows[0.0]["logps/chosen"]
