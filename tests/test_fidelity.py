"""Paper fidelity, round 2 (issue #25): the optimiser's no-decay group per family, the reference initialisations
(std within 10%), VideoMAE's [0, 1] pixel targets without ``norm_targets``, the linear scaling rule, and the SVM
protocols."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from modalities.audio.model import Wav2Vec2Config, Wav2Vec2Encoder, Wav2Vec2Pretrainer, Wav2Vec2PretrainingConfig
from modalities.pointcloud.model import PointMAEConfig, PointMAEEncoder, PointMAEPretrainer, PointMAEPretrainingConfig
from modalities.video.model import VideoMAEConfig, VideoMAEEncoder, VideoMAEPretrainer, VideoMAEPretrainingConfig
from pipelines.engine import build_optimizer, scaled_lr
from pipelines.finetune import FinetuneModel
from pipelines.recipe import TrainConfig

POINT = {"num_points": 128, "num_patches": 16, "patch_size": 16, "dim": 64, "depth": 2, "heads": 4,
         "pointnet_dims": [32, 64, 128]}
VIDEO = {"image_size": 32, "patch_size": 8, "num_frames": 4, "tubelet_size": 2, "dim": 64, "depth": 2, "heads": 4}


def _no_decay_matrices(model: nn.Module) -> set[str]:
    """Names of the tensors of 2 or more dimensions that the optimiser keeps out of weight decay."""
    opt = build_optimizer(model, TrainConfig(weight_decay=0.05))
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)] for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"] if p.dim() >= 2}


def test_the_no_decay_group_holds_exactly_each_references_tensors():
    torch.manual_seed(0)
    point = PointMAEPretrainer(PointMAEEncoder(PointMAEConfig(**POINT)), PointMAEPretrainingConfig(decoder_heads=4))
    assert _no_decay_matrices(point) == {"mask_token"}                          # Point-MAE: every "*token*"
    video = VideoMAEPretrainer(VideoMAEEncoder(VideoMAEConfig(**VIDEO)),
                               VideoMAEPretrainingConfig(decoder_dim=32, decoder_heads=4))
    assert _no_decay_matrices(video) == {"mask_token"}                          # positions are fixed buffers here
    audio = Wav2Vec2Pretrainer(Wav2Vec2Encoder(Wav2Vec2Config(conv_layers=[(16, 10, 5)], dim=32, depth=1, heads=2,
                                                              pos_conv_kernel=4, pos_conv_groups=2)),
                               Wav2Vec2PretrainingConfig(codevectors_per_group=8, codevector_dim=16, proj_dim=16))
    assert _no_decay_matrices(audio) == set()                                   # fairseq decays every tensor


def test_a_fine_tuned_point_mae_keeps_its_class_token_out_of_decay():
    from pipelines.finetune import FinetuneSettings
    torch.manual_seed(0)
    enc = PointMAEEncoder(PointMAEConfig(**POINT, cls_token=True))
    model = FinetuneModel(enc, ["a", "b", "c"], FinetuneSettings(mode="full"))
    names = {id(p): n for n, p in model.named_parameters()}
    groups = model.optimizer_groups(0.05)
    kept = {names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"] if p.dim() >= 2}
    assert kept == {"encoder.cls_token"}                              # cls_pos decays, as the reference


def _std_ok(t: torch.Tensor, want: float) -> bool:
    return abs(float(t.detach().float().std()) - want) <= 0.1 * want


def test_point_mae_initialises_as_the_reference():
    """Every encoder linear (mini-PointNet, position MLP, blocks) ~ TN(0, 0.02); decoder blocks Xavier-uniform."""
    torch.manual_seed(0)
    pre = PointMAEPretrainer(PointMAEEncoder(PointMAEConfig(**POINT)), PointMAEPretrainingConfig(decoder_heads=4))
    enc = pre.encoder
    for lin in [m for m in enc.patch_embed.modules() if isinstance(m, nn.Linear)] + \
               [m for m in enc.pos_embed.modules() if isinstance(m, nn.Linear)]:
        assert _std_ok(lin.weight, 0.02) and not lin.bias.any()
    assert enc.transformer.layers[0].attn.qkv.bias is None                     # no q/k/v bias
    fc1 = pre.decoder.layers[0].fc1
    assert _std_ok(fc1.weight, math.sqrt(2.0 / (fc1.in_features + fc1.out_features)))
    assert _std_ok(pre.mask_token, 0.02)


def test_video_mae_initialises_as_the_reference():
    """Tubelet embedding and encoder_to_decoder: PyTorch's default U(±1/√fan_in); blocks Xavier; the mask token
    N(0, 0.02) truncated at ±1σ (std 0.02·√(1 − 2φ(1)/(2Φ(1) − 1)) ≈ 0.0108)."""
    torch.manual_seed(0)
    pre = VideoMAEPretrainer(VideoMAEEncoder(VideoMAEConfig(**VIDEO)),
                             VideoMAEPretrainingConfig(decoder_dim=2048, decoder_heads=4))
    pe, e2d = pre.encoder.patch_embed, pre.encoder_to_decoder
    assert _std_ok(pe.weight, 1 / math.sqrt(3 * pe.in_features))
    assert _std_ok(e2d.weight, 1 / math.sqrt(3 * e2d.in_features))
    fc1 = pre.encoder.transformer.layers[0].fc1
    assert _std_ok(fc1.weight, math.sqrt(2.0 / (fc1.in_features + fc1.out_features)))
    phi = math.exp(-0.5) / math.sqrt(2 * math.pi)
    big_phi = 0.5 * (1 + math.erf(1 / math.sqrt(2)))
    assert float(pre.mask_token.detach().abs().max()) <= 0.02
    assert _std_ok(pre.mask_token, 0.02 * math.sqrt(1 - 2 * phi / (2 * big_phi - 1)))


def test_video_targets_without_norm_targets_are_pixels_in_zero_one():
    """norm_targets: false regresses the [0, 1] pixels (the reference), not the processor's normalised ones."""
    torch.manual_seed(0)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    cfg = VideoMAEPretrainingConfig(decoder_dim=32, decoder_heads=4, norm_targets=False, pixel_mean=mean,
                                    pixel_std=std, mask_ratio=0.5)
    pre = VideoMAEPretrainer(VideoMAEEncoder(VideoMAEConfig(**VIDEO)), cfg)
    raw = torch.rand(2, 4, 3, 32, 32)
    pixels = (raw - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    mask = pre.mask(2, torch.Generator().manual_seed(0), torch.device("cpu"))
    with torch.no_grad():
        pred = pre.reconstruct(pixels, mask)
        loss = pre.loss(pixels, mask).loss
        target = pre.encoder.tubelets(raw)[mask].view(2, -1, pred.shape[-1])
    assert float(loss) == pytest.approx(float(((pred - target) ** 2).mean()), rel=1e-5)


def test_the_linear_scaling_rule():
    cfg = TrainConfig(lr=1.5e-4, lr_batch=256, batch_size=32)
    assert scaled_lr(cfg, world=8).lr == pytest.approx(1.5e-4)                 # 8 × 32 = 256
    assert scaled_lr(cfg, world=2).lr == pytest.approx(1.5e-4 * 64 / 256)
    assert scaled_lr(TrainConfig(lr=1e-3), world=4).lr == 1e-3                  # no lr_batch: as given


def test_svm_protocols_reference_is_raw_features_and_c_one(tmp_path, monkeypatch):
    """On features whose useful direction is tiny next to a useless one, standardising changes the answer: the
    reference protocol (raw, C = 1) and ours (standardised, C = 0.01) are computed as named."""
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    from modalities.pointcloud import evaluate as ev
    rng = np.random.default_rng(0)
    x = np.c_[rng.normal(size=200) * 1e-3, rng.normal(size=200) * 100]
    y = (x[:, 0] > 0).astype(int)
    feats = {"train": (x[:150], y[:150]), "test": (x[150:], y[150:])}

    class Split:
        def __init__(self, which):
            self.which, self.labels = which, feats[which][1].tolist()

    monkeypatch.setattr("modalities.pointcloud.data.load_data", lambda spec: Split(spec))
    monkeypatch.setattr(ev, "pooled_features", lambda enc, proc, data: feats[data.which][0])
    spec = {"train": "train", "test": "test"}
    raw = LinearSVC(C=1.0, max_iter=20000).fit(x[:150], y[:150]).score(x[150:], y[150:])
    sc = StandardScaler().fit(x[:150])
    std = LinearSVC(C=0.01, max_iter=20000).fit(sc.transform(x[:150]), y[:150]).score(sc.transform(x[150:]), y[150:])
    assert ev.linear_svm(None, None, spec)["accuracy"] == pytest.approx(raw)
    assert ev.linear_svm(None, None, spec, protocol="standardised")["accuracy"] == pytest.approx(std)
    assert raw != std
    with pytest.raises(ValueError, match="protocol"):
        ev.linear_svm(None, None, spec, protocol="other")
