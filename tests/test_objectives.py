import math

import pytest
import torch

from zoo import objectives as O

LOG1PE = math.log(1 + math.exp(-1))  # -log(e / (e + 1))


def test_info_nce_hand_value_and_symmetry():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert O.info_nce(a, a, temperature=1.0).item() == pytest.approx(LOG1PE, abs=1e-6)
    b = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # a→b: row0 logits [1, 1/√2], label 0; row1 logits [0, 1/√2], label 1
    s = 1 / math.sqrt(2)
    ab = 0.5 * (-math.log(math.e / (math.e + math.exp(s))) - math.log(math.exp(s) / (1 + math.exp(s))))
    # b→a: row0 logits [1, 0], label 0; row1 logits [s, s], label 1
    ba = 0.5 * (LOG1PE + math.log(2))
    assert O.info_nce(a, b, 1.0, symmetric=False).item() == pytest.approx(ab, abs=1e-6)
    assert O.info_nce(a, b, 1.0).item() == pytest.approx(0.5 * (ab + ba), abs=1e-6)


def test_info_nce_gradient():
    a = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: O.info_nce(x, y, 0.5), (a, b))


def test_sample_negatives_never_the_positive_and_only_hidden_frames():
    mask = torch.zeros(3, 12, dtype=torch.bool)
    mask[0, [1, 3, 5]] = True
    mask[1, 4] = True                     # a single hidden frame: no distractor possible
    mask[2] = True
    neg = O.sample_negatives(mask, 7, generator=torch.Generator().manual_seed(0))
    assert neg.shape == (3, 12, 7)
    assert (neg[~mask] == -1).all() and (neg[1] == -1).all()
    for t in (1, 3, 5):
        assert set(neg[0, t].tolist()) <= {1, 3, 5} - {t}
    t = torch.arange(12)[:, None]
    assert (neg[2] != t).all() and ((neg[2] >= 0) & (neg[2] < 12)).all()


def test_sample_negatives_uniform_over_the_others():
    mask = torch.zeros(1, 6, dtype=torch.bool)
    mask[0, [0, 2, 4, 5]] = True
    neg = O.sample_negatives(mask, 30000, generator=torch.Generator().manual_seed(1))
    counts = torch.bincount(neg[0, 2], minlength=6).float() / 30000
    assert torch.allclose(counts, torch.tensor([1 / 3, 0, 0, 0, 1 / 3, 1 / 3]), atol=0.015)


def test_wav2vec_contrastive_hand_value_and_identical_distractor():
    c = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    mask = torch.tensor([[True, True]])
    neg = torch.tensor([[[1], [0]]])      # each frame's distractor is the other frame
    loss, logits = O.wav2vec_contrastive(c, q, mask, neg, temperature=1.0)
    assert loss.item() == pytest.approx(LOG1PE, abs=1e-6)
    assert logits.shape == (2, 2)
    q2 = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])   # distractor equals the positive → excluded
    loss2, logits2 = O.wav2vec_contrastive(c[:, :1], q2, mask[:, :1], neg[:, :1], temperature=1.0)
    assert torch.isinf(logits2[0, 1]) and loss2.item() == pytest.approx(0.0, abs=1e-6)


def test_diversity_loss_and_perplexity():
    uniform = torch.full((2, 4), 0.25)
    assert O.codebook_perplexity(uniform).item() == pytest.approx(8.0, abs=1e-5)
    assert O.diversity_loss(uniform).item() == pytest.approx(0.0, abs=1e-6)
    onehot = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    assert O.diversity_loss(onehot).item() == pytest.approx(0.75, abs=1e-5)
    half = torch.tensor([[0.5, 0.5, 0, 0]])           # perplexity 2 of 4
    assert O.diversity_loss(half).item() == pytest.approx(0.5, abs=1e-5)


def test_masked_mse_hand_values():
    pred = torch.tensor([[[1.0, 1.0], [0.0, 0.0], [5.0, 5.0]]])
    target = torch.tensor([[[0.0, 2.0], [1.0, 1.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, True, False]])
    # token0: ((1-0)^2 + (1-2)^2)/2 = 1; token1: 1 → mean 1; token2 ignored
    assert O.masked_mse(pred, target, mask, norm_targets=False).item() == pytest.approx(1.0)
    # normalised targets: token0 → [-1, 1]; pred [1,1] → (4 + 0)/2 = 2; token1 → [0, 0] → 0 (var eps)
    assert O.masked_mse(pred, target, mask, eps=0.0 + 1e-12).item() == pytest.approx(1.0, abs=1e-4)


def test_scaled_cosine_error():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    y = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    expected = (1.0 + (1 - 1 / math.sqrt(2)) ** 2) / 2
    assert O.scaled_cosine_error(x, y, 2.0).item() == pytest.approx(expected, abs=1e-6)
    assert O.scaled_cosine_error(x, y, 1.0).item() == pytest.approx((1 + 1 - 1 / math.sqrt(2)) / 2, abs=1e-6)
    xg = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    yg = torch.randn(3, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: O.scaled_cosine_error(a, yg, 3.0), (xg,))


def test_chamfer_l2_hand_value_and_batching():
    a = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0]]])
    b = torch.tensor([[[0.0, 0, 0]]])
    assert O.chamfer_l2(a, b).item() == pytest.approx(0.5)
    b2 = torch.tensor([[[0.0, 2.0, 0]]])
    # a→b2: 4, 5 → 4.5 ; b2→a: 4 → total 8.5 ; batch mean with the first: (0.5 + 8.5)/2
    assert O.chamfer_l2(torch.cat([a, a]), torch.cat([b, b2])).item() == pytest.approx(4.5)


def test_latent_regression_values_and_stop_gradient():
    pred = torch.tensor([[1.0, 2.0], [3.0, 3.0]], requires_grad=True)
    target = torch.zeros(2, 2, requires_grad=True)
    loss = O.latent_regression(pred, target, torch.tensor([True, False]))
    assert loss.item() == pytest.approx(2.5)
    loss.backward()
    assert target.grad is None and torch.equal(pred.grad[1], torch.zeros(2))
    assert O.latent_regression(pred, target, kind="smooth_l1").item() == pytest.approx(
        (0.5 + 1.5 + 2.5 + 2.5) / 4)
    with pytest.raises(ValueError):
        O.latent_regression(pred, target, kind="l3")


def test_margin_contrastive_hand_values():
    e = torch.tensor([[0.0], [1.0], [3.0]])
    y = torch.tensor([0, 0, 1])
    assert O.margin_contrastive(e, y, margin=2.0).item() == pytest.approx(1 / 3)
    assert O.margin_contrastive(e, y, margin=2.5).item() == pytest.approx((1 + 0.25) / 3)
    # one hard negative per anchor: 0→2 (d=3), 1→2 (d=2), 2→1 (d=2) → (1 + 0 + .25 + .25) / 4
    assert O.margin_contrastive(e, y, margin=2.5, hard_negatives=1).item() == pytest.approx(0.375)
    e.requires_grad_(True)
    O.margin_contrastive(e, y, margin=2.5).backward()
    assert torch.isfinite(e.grad).all() and e.grad.abs().sum() > 0
