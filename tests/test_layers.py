import math

import pytest
import torch
from torch import nn

from zoo.layers import DropPath, EMATeacher, LearnedPositions, TransformerEncoder, masked_mean, sinusoidal_positions


def test_padded_batch_equals_one_by_one():
    torch.manual_seed(0)
    enc = TransformerEncoder(16, 2, 4).eval()
    xs = [torch.randn(1, n, 16) for n in (5, 9, 2)]
    batch = torch.zeros(3, 9, 16)
    pad = torch.ones(3, 9, dtype=torch.bool)
    for i, x in enumerate(xs):
        batch[i, : x.shape[1]] = x[0]
        pad[i, : x.shape[1]] = False
    out = enc(batch, pad)
    for i, x in enumerate(xs):
        single = enc(x)
        assert torch.allclose(out[i, : x.shape[1]], single[0], atol=1e-5)
    pooled = masked_mean(out, pad)
    assert torch.allclose(pooled[2], enc(xs[2])[0].mean(dim=0), atol=1e-5)


def test_all_padding_row_is_an_error():
    enc = TransformerEncoder(8, 1, 2)
    pad = torch.tensor([[False, True], [True, True]])
    with pytest.raises(ValueError, match="example 1"):
        enc(torch.randn(2, 2, 8), pad)


def test_return_hidden_and_gradients():
    enc = TransformerEncoder(8, 3, 2, drop_path=0.2)
    out, hidden = enc(torch.randn(2, 4, 8), return_hidden=True)
    assert len(hidden) == 4 and out.shape == (2, 4, 8)
    out.sum().backward()
    assert all(p.grad is not None for p in enc.parameters())
    assert [round(layer.drop_path.p, 3) for layer in enc.layers] == [0.0, 0.1, 0.2]


def test_drop_path():
    dp = DropPath(0.5)
    x = torch.ones(1000, 3)
    dp.eval()
    assert torch.equal(dp(x), x)
    dp.train()
    y = dp(x)
    assert set(y.unique().tolist()) <= {0.0, 2.0} and (y[:, 0:1] == y).all()


def test_sinusoidal_positions_values():
    pe = sinusoidal_positions(3, 4)
    assert torch.allclose(pe[0], torch.tensor([0.0, 1.0, 0.0, 1.0]))
    assert pe[2, 0].item() == pytest.approx(math.sin(2))
    assert pe[2, 3].item() == pytest.approx(math.cos(2 / 100))
    lp = LearnedPositions(5, 4)
    assert lp(3).shape == (3, 4)
    with pytest.raises(ValueError):
        lp(6)


def test_ema_teacher_update_values():
    student = nn.Linear(2, 1)
    teacher = EMATeacher(student, 0.9, 1.0, total_steps=10)
    assert not any(p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        teacher.module.weight.fill_(0.0)
        student.weight.fill_(1.0)
    assert teacher.momentum(0) == pytest.approx(0.9) and teacher.momentum(5) == pytest.approx(0.95)
    assert teacher.momentum(20) == pytest.approx(1.0)
    m = teacher.update(student, 0)
    assert m == pytest.approx(0.9)
    assert torch.allclose(teacher.module.weight, torch.full((1, 2), 0.1))
    teacher.update(student, 5)
    assert torch.allclose(teacher.module.weight, torch.full((1, 2), 0.1 * 0.95 + 0.05))
    with pytest.raises(ValueError):
        EMATeacher(student, 0.99, 0.9)


def test_layerdrop_skips_whole_layers_while_training_only():
    torch.manual_seed(0)
    enc = TransformerEncoder(16, 4, 2, dropout=0.0, layerdrop=0.5)
    x = torch.randn(2, 5, 16)
    torch.manual_seed(7)
    skip = (torch.rand(4) < 0.5).tolist()
    assert 0 < sum(skip) < 4                                   # this seed skips some layers, not all
    expected = x
    for layer, s in zip(enc.layers, skip):
        expected = expected if s else layer(expected)
    torch.manual_seed(7)
    out, hidden = enc.train()(x, return_hidden=True)
    assert torch.allclose(out, enc.norm(expected), atol=1e-6)
    assert len(hidden) == 5                                     # one entry a layer, skipped or not
    assert torch.allclose(enc.eval()(x), enc.norm(_run_all(enc, x)), atol=1e-6)


def _run_all(enc: TransformerEncoder, x: torch.Tensor) -> torch.Tensor:
    for layer in enc.layers:
        x = layer(x)
    return x


def test_activation_dropout_is_its_own_setting():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16)
    quiet = TransformerEncoder(16, 1, 2, dropout=0.0, activation_dropout=0.0).train()
    assert torch.equal(quiet(x), quiet.eval()(x))
    noisy = TransformerEncoder(16, 1, 2, dropout=0.0, activation_dropout=0.5).train()
    assert not torch.allclose(noisy(x), noisy.eval()(x))
    assert TransformerEncoder(16, 1, 2, dropout=0.2).layers[0].act_drop.p == 0.2   # default: as dropout
