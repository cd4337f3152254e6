"""Video modality: tube masks, tubelets, VideoMAE targets, visible-token encoder, processor policies and bad input,
transformers parity, and the end-to-end CLI path on real mp4 files decoded by torchcodec."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

import zoo
from modalities.video import (
    VideoMAEConfig,
    VideoMAEEncoder,
    VideoMAEPretrainer,
    VideoMAEPretrainingConfig,
    VideoProcessor,
    VideoProcessorConfig,
)
from modalities.video.data import make_moving_digits, render_clip, write_mp4
from modalities.video.model import patchify, unpatchify, video_positions
from modalities.video.processor import frame_indices
from zoo import BadExample, masking
from zoo.objectives import channel_norm_targets, masked_mse

from .conftest import check_saved_model, zoo_main

TINY = {"image_size": 32, "patch_size": 8, "num_frames": 4, "tubelet_size": 2, "dim": 32, "depth": 2, "heads": 4}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_registered_through_the_entry_point():
    assert zoo.get_modality("video").architecture("videomae").encoder is VideoMAEEncoder


@pytest.mark.parametrize("patches,ratio,hidden", [(196, 0.9, 176), (49, 0.9, 44), (10, 0.75, 7), (16, 0.9, 14)])
def test_tube_mask_counts_round_down_as_the_reference(patches, ratio, hidden):
    m = masking.tube_mask(5, 8, patches, ratio, generator=gen(0)).view(5, 8, patches)
    assert (m.sum(dim=2) == hidden).all()                      # every frame of every clip: the same count
    assert (m == m[:, :1]).all()                               # one spatial pattern shared by every time slice
    assert not (m[0, 0] == m[1, 0]).all()                      # clips differ


def test_tube_mask_is_deterministic_under_a_generator():
    a = masking.tube_mask(3, 4, 64, 0.9, generator=gen(7))
    b = masking.tube_mask(3, 4, 64, 0.9, generator=gen(7))
    c = masking.tube_mask(3, 4, 64, 0.9, generator=gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_patchify_round_trip_and_conv3d_layout():
    x = torch.randn(2, 6, 3, 16, 24)
    tokens = patchify(x, 2, 8)
    assert tokens.shape == (2, 3 * 2 * 3, 2 * 8 * 8 * 3)
    assert torch.equal(unpatchify(tokens, (3, 2, 3), 2, 8, 3), x)
    # token 4 = time slice 0, row 1, column 1; its vector is (t, p, p, C) channel-last
    assert torch.equal(tokens[0, 4].view(2, 8, 8, 3), x[0, 0:2, :, 8:16, 8:16].permute(0, 2, 3, 1))
    # our tubelet matmul is the strided Conv3d of the paper, with the weight laid out (t, p, p, C)
    conv = torch.nn.Conv3d(3, 5, (2, 8, 8), (2, 8, 8))
    ref = conv(x.permute(0, 2, 1, 3, 4)).flatten(2).transpose(1, 2)
    ours = tokens @ conv.weight.permute(0, 2, 3, 4, 1).reshape(5, -1).T + conv.bias
    assert torch.allclose(ours, ref, atol=1e-5)


def test_per_channel_norm_pixel_targets_hand_values():
    # one tubelet of 4 positions x 2 channels, channel last: channel 0 = 1, 2, 3, 4; channel 1 constant 5
    t = torch.tensor([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0], [4.0, 5.0]]).reshape(1, 1, 8)
    out = channel_norm_targets(t, channels=2).view(4, 2)
    std = math.sqrt(5 / 3)                                     # unbiased std of 1..4
    expect0 = [(v - 2.5) / (std + 1e-6) for v in (1, 2, 3, 4)]
    assert out[:, 0].tolist() == pytest.approx(expect0, abs=1e-6)
    assert out[:, 1].tolist() == [0.0, 0.0, 0.0, 0.0]
    pred = torch.zeros(1, 1, 8)
    assert masked_mse(pred, t, torch.ones(1, 1, dtype=torch.bool), channels=2).item() == \
        pytest.approx(sum(v * v for v in expect0) / 8, abs=1e-6)
    # a colour cast: channels of different means and contrasts. Whole-patch (MAE) normalisation gives other targets.
    g = gen(0)
    base = torch.rand(1, 1, 64, 1, generator=g)
    cast = torch.cat([0.8 + 0.1 * base, 0.3 * base, 0.05 + 0.02 * base], dim=-1).reshape(1, 1, 192)
    per_channel, whole = channel_norm_targets(cast, 3), (cast - cast.mean()) / cast.std(unbiased=False)
    assert (per_channel - whole).pow(2).mean().sqrt().item() > 0.5
    assert torch.allclose(per_channel.view(64, 3)[:, 0], per_channel.view(64, 3)[:, 1], atol=1e-4)


def test_encoder_on_visible_tokens_equals_full_sequence_with_masked_tokens_dropped():
    torch.manual_seed(0)
    enc = VideoMAEEncoder(VideoMAEConfig(**TINY)).eval()
    x = torch.randn(3, 4, 3, 32, 32)
    mask = masking.tube_mask(3, 2, 16, 0.75, generator=gen(1))
    with torch.no_grad():
        visible = enc({"pixel_values": x}, mask=mask).tokens
        assert visible.shape == (3, 2 * 4, 32)
        # the full sequence, masked tokens kept but never attended to: the visible outputs are the same
        full = enc.transformer(enc.embed(x), padding_mask=mask)
        assert torch.allclose(visible, full[~mask].view(3, -1, 32), atol=1e-5)
        # positions are those of the tokens' own places, not of their rank among the visible ones
        moved = enc.transformer(enc.embed(x)[~mask].view(3, -1, 32) - enc.positions[~mask[0]]
                                + enc.positions[: visible.shape[1]])
        assert not torch.allclose(visible, moved, atol=1e-3)


def test_positions_1d_and_3d():
    one = video_positions((2, 3, 3), 24, "1d")
    assert torch.equal(one, zoo.layers.sinusoidal_positions(18, 24))
    three = video_positions((2, 3, 3), 24, "3d").view(2, 3, 3, 24)
    assert torch.equal(three[0, :, :, :8], three[0, :1, :1, :8].expand(3, 3, 8))     # time part: same within a slice
    assert not torch.equal(three[0, :, :, :8], three[1, :, :, :8])
    assert not torch.equal(three[:, 0, :, 8:16], three[:, 1, :, 8:16])                 # row part varies by row


def test_pretrainer_loss_is_on_hidden_tubelets_only():
    torch.manual_seed(0)
    pre = VideoMAEPretrainer(VideoMAEEncoder(VideoMAEConfig(**TINY)),
                             VideoMAEPretrainingConfig(decoder_dim=16, decoder_depth=1, decoder_heads=2))
    x = torch.randn(2, 4, 3, 32, 32)
    mask = masking.tube_mask(2, 2, 16, 0.75, generator=gen(3))
    out = pre.loss(x, mask)
    assert out.metrics["visible_tokens"] == 8 and math.isfinite(out.loss.item())
    y = x.clone()
    tokens = patchify(y, 2, 8)
    tokens[mask] += 3.0 * torch.randn_like(tokens[mask])        # change hidden tubelets: the loss changes
    changed = pre.loss(unpatchify(tokens, (2, 4, 4), 2, 8, 3), mask).loss
    assert not torch.isclose(changed, out.loss)
    out.loss.backward()
    assert pre.mask_token.grad is not None and pre.encoder.patch_embed.weight.grad.abs().sum() > 0


def test_frame_sampling_policies():
    cfg = VideoProcessorConfig(num_frames=4, frame_stride=2)
    assert frame_indices(20, cfg, "c").tolist() == [6, 8, 10, 12]               # dense, centre clip
    assert frame_indices(6, cfg, "c").tolist() == [0, 2, 3, 5]                  # auto → segment middles
    assert frame_indices(2, cfg, "c").tolist() == [0, 0, 1, 1]                  # repeat (default)
    assert frame_indices(3, VideoProcessorConfig(num_frames=4, short_clip="loop"), "c").tolist() == [0, 1, 2, 0]
    assert frame_indices(3, VideoProcessorConfig(num_frames=4, short_clip="pad"), "c").tolist() == [0, 1, 2, 2]
    with pytest.raises(BadExample, match="'frames'.*3 frames; 4 are needed"):
        frame_indices(3, VideoProcessorConfig(num_frames=4, short_clip="reject", sampling="segment"), "c")
    with pytest.raises(BadExample, match="zero frames"):
        frame_indices(0, cfg, "c")


def test_the_generated_clips_are_the_same_bytes_every_time(tmp_path):
    # x264's threaded lookahead raced torchcodec's frame buffers: about one encode in four differed (issue #26:
    # a fresh clone's demo printed another video row); twelve encodes of one clip must agree byte for byte
    from modalities.video.data import _digit_images
    images, _ = _digit_images()
    clip = render_clip(images[3], "down", np.random.RandomState([0, 1, 2]), frames=32, size=64)
    first = write_mp4(clip, tmp_path / "0.mp4").read_bytes()
    for i in range(1, 12):
        assert write_mp4(clip, tmp_path / f"{i}.mp4").read_bytes() == first, f"encode {i} differs"


def test_processor_arrays_files_and_bad_input(tmp_path):
    rng = np.random.RandomState(0)
    from modalities.video.data import _digit_images
    images, _ = _digit_images()
    clip = render_clip(images[0], "right", rng, frames=12, size=40)
    path = write_mp4(clip, tmp_path / "a.mp4")
    p = VideoProcessor(VideoProcessorConfig(num_frames=4, frame_stride=3, image_size=32))
    from_file = p(str(path))["pixel_values"]
    from_array = p(clip)["pixel_values"]
    assert from_file.shape == from_array.shape == (4, 3, 32, 32)
    assert (from_file - from_array).abs().mean() < 0.1                          # H.264 is lossy, not different
    assert torch.equal(p({"bytes": path.read_bytes(), "path": "a.mp4"})["pixel_values"], from_file)
    assert torch.equal(p(torch.from_numpy(clip).float() / 255)["pixel_values"], from_array)
    from torchcodec.decoders import VideoDecoder  # a decoded ``datasets`` Video value
    assert torch.equal(p(VideoDecoder(str(path)), name="a.mp4")["pixel_values"], from_file)
    batch = p.collate([p(clip), p(clip)])
    assert batch["pixel_values"].shape == (2, 4, 3, 32, 32)

    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x00\x00 ftypisom" + bytes(300))
    (tmp_path / "empty.mp4").write_bytes(b"")
    nan = clip.astype(np.float32) / 255
    nan[2, 3, 4, 1] = np.nan
    cases = [
        (str(tmp_path / "corrupt.mp4"), "corrupt.mp4", "'path'", "cannot decode video"),
        (str(tmp_path / "empty.mp4"), "empty.mp4", "'path'", "empty file"),
        (str(tmp_path / "missing.mp4"), "missing.mp4", "'path'", "no such file"),
        (np.zeros((0, 8, 8, 3), np.uint8), "clip-0", "'frames'", "zero frames"),
        (clip[..., :1], "clip-0", "'channels'", "grey"),
        (np.concatenate([clip, clip[..., :1]], axis=-1), "clip-0", "'channels'", "four-channel"),
        (nan, "clip-0", "'frames'", "NaN"),
        (clip.astype(np.float32), "clip-0", "'frames'", "must lie in \\[0, 1\\]"),
        ({"foo": 1}, "clip-0", "'video'", "unrecognised"),
    ]
    for example, name, field, reason in cases:
        with pytest.raises(BadExample, match=f"{name}.*{field}.*{reason}"):
            p(example, name=None if isinstance(example, str) else "clip-0")
    with pytest.raises(BadExample) as caught:        # the decoder's reason whole, without its build path
        p(str(tmp_path / "corrupt.mp4"))
    assert "_core/" not in str(caught.value) and ".cpp" not in str(caught.value)
    assert re.search(r"cannot decode video: [A-Z]", str(caught.value)), str(caught.value)
    with pytest.raises(BadExample, match="3 frames; 10 are needed"):
        VideoProcessor(VideoProcessorConfig(num_frames=10, short_clip="reject", image_size=32))(clip[:3], name="x")


def test_a_decoders_message_is_read_as_a_user_reads_it():
    """:func:`zoo.plugin.decoder_message`: torchcodec's source location and the repeated path go; a message is cut
    at 200 characters from its start, never its end (video messages used to start mid-word)."""
    from zoo.plugin import decoder_message
    err = RuntimeError("SingleStreamDecoder, /__w/torchcodec/src/torchcodec/_core/SingleStreamDecoder.cpp:41, "
                       "Could not open input file: /d/a.mp4 Invalid data found when processing input\n"
                       "see https://github.com/pytorch/torchcodec")
    assert decoder_message(err, "/d/a.mp4") == "Could not open input file: Invalid data found when processing input"
    assert decoder_message(RuntimeError("x" * 300), "p") == "x" * 200
    assert decoder_message(RuntimeError(""), "p") == "RuntimeError"


def test_fitted_statistics_are_saved(tmp_path):
    clips = [np.full((4, 8, 8, 3), v, np.uint8) for v in (0, 255)]
    p = VideoProcessor(VideoProcessorConfig(num_frames=2, image_size=8, fit_statistics=True)).fit(clips)
    assert p.config.mean == pytest.approx([0.5] * 3) and p.config.std == pytest.approx([0.5] * 3)
    p.save_pretrained(tmp_path)
    q = VideoProcessor.from_pretrained(tmp_path)
    assert q.config.mean == p.config.mean and q.config.num_frames == 2
    assert json.loads((tmp_path / "preprocessor.json").read_text())["config"]["frame_stride"] == 4


def _hf_config(mean_pooling: bool):
    transformers = pytest.importorskip("transformers")
    return transformers, transformers.VideoMAEConfig(
        image_size=32, patch_size=8, num_frames=4, tubelet_size=2, hidden_size=48, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=96, decoder_hidden_size=24, decoder_num_hidden_layers=2,
        decoder_num_attention_heads=2, decoder_intermediate_size=48, use_mean_pooling=mean_pooling,
        layer_norm_eps=1e-6)


@pytest.mark.parametrize("pretraining,mean_pooling", [(True, False), (False, True)])
def test_transformers_conversion_parity(pretraining, mean_pooling, tmp_path):
    transformers, cfg = _hf_config(mean_pooling)
    torch.manual_seed(0)
    hf = (transformers.VideoMAEForPreTraining if pretraining else transformers.VideoMAEModel)(cfg).eval()
    with torch.no_grad():                                     # random non-zero biases: the mapping must carry them
        for name, p in hf.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    hf.save_pretrained(tmp_path / "hf")
    out = zoo_main("convert", str(tmp_path / "hf"), str(tmp_path / "zoo"))
    assert out.returncode == 0, out.stderr
    enc = zoo.AutoEncoder.from_pretrained(tmp_path / "zoo").eval()
    assert enc.config.final_norm == (not mean_pooling)
    x = torch.randn(2, 4, 3, 32, 32)
    mask = masking.tube_mask(2, 2, 16, 0.75, generator=gen(0))
    base = hf.videomae if pretraining else hf
    with torch.no_grad():
        for m in (None, mask):
            ref = base(x, bool_masked_pos=m).last_hidden_state
            ours = enc({"pixel_values": x}, mask=m).tokens
            assert ours.shape == ref.shape and (ours - ref).abs().max().item() < 1e-4
        enc.transformer.layers[0].fc2.weight[0, 0] += 0.5           # the comparison can fail
        assert (enc({"pixel_values": x}).tokens - base(x).last_hidden_state).abs().max().item() > 1e-4
    if pretraining:                                              # the whole objective matches on the same masks
        from modalities.video.convert import config_from_transformers, map_pretraining_heads, map_state_dict
        from zoo.hub import load_weights
        enc_cfg, pre_cfg = config_from_transformers(cfg.to_dict())
        ours = VideoMAEPretrainer(VideoMAEEncoder(enc_cfg), pre_cfg).eval()
        state = load_weights(tmp_path / "hf" / "model.safetensors")
        ours.encoder.load_state_dict(map_state_dict(state, enc_cfg))
        missing = ours.load_state_dict(map_pretraining_heads(state), strict=False)
        assert not missing.unexpected_keys and all(k.startswith("encoder.") for k in missing.missing_keys)
        mean = torch.tensor([0.485, 0.456, 0.406])[None, None, :, None, None]
        std = torch.tensor([0.229, 0.224, 0.225])[None, None, :, None, None]
        pixels = (torch.rand(2, 4, 3, 32, 32) - mean) / std
        with torch.no_grad():
            ref = hf(pixels, bool_masked_pos=mask)
            mine = ours.loss(pixels, mask).loss
            assert (ours.reconstruct(pixels, mask) - ref.logits).abs().max().item() < 1e-4
            assert mine.item() == pytest.approx(ref.loss.item(), rel=1e-4)
    (tmp_path / "hf" / "model.safetensors").unlink()
    torch.save(hf.state_dict(), tmp_path / "hf" / "pytorch_model.bin")
    out = zoo_main("convert", str(tmp_path / "hf"), str(tmp_path / "zoo2"))
    assert out.returncode == 2 and "pytorch_model.bin" in out.stderr and "never loaded" in out.stderr


@pytest.mark.slow   # the conformance suite runs this path (zoo pretrain --data, reload, identical outputs)
def test_end_to_end_pretrain_cli_on_mp4_save_reload_identical_embeddings(tmp_path):
    root = make_moving_digits(tmp_path / "digits", train=12, test=4, frames=8, size=32)
    recipe = tmp_path / "r.yaml"
    data = {"source": "moving-digits", "root": str(root)}
    recipe.write_text(json.dumps({
        "name": "video-e2e", "modality": "video", "architecture": "videomae", "encoder": TINY,
        "pretraining": {"decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2},
        "processor": {"num_frames": 4, "frame_stride": 2, "image_size": 32, "fit_statistics": True},
        "data": {"train": {**data, "split": "train"}},
        "train": {"steps": 3, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 3, "num_workers": 1},
        "evaluate": {"train": {**data, "split": "train"}, "test": {**data, "split": "test"}, "knn_k": 3}}))
    out = zoo_main("pretrain", str(recipe), "--output", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr
    model = tmp_path / "run" / "model"
    clip = str(next((root / "test").rglob("*.mp4")))
    enc, proc, _ = check_saved_model(tmp_path / "run", clip, tmp_path, step=3)
    assert isinstance(enc, VideoMAEEncoder) and proc.config.fit_statistics and proc.config.mean != [0.485, 0.456, 0.406]
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(math.isfinite(r["loss"]) for r in rows)
    out = zoo_main("evaluate", str(model))
    assert out.returncode == 0, out.stderr
    # a corrupt file in the training folder: the documented error names the file and the field ...
    bad = root / "train" / "right" / "00000_corrupt.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with open(root / "metadata.csv", "a") as fh:
        fh.write("train/right/00000_corrupt.mp4,0,right,train\n")
    out = zoo_main("pretrain", str(recipe), "--output", str(tmp_path / "run2"))
    assert out.returncode != 0 and "00000_corrupt.mp4" in out.stderr and "'path'" in out.stderr
    assert "cannot decode video" in out.stderr
    # ... or, asked for, it is skipped and counted
    out = zoo_main("pretrain", str(recipe), "--output", str(tmp_path / "run3"), "--set", "train.skip_bad=true")
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "run3" / "train_summary.json").read_text())
    assert summary["skipped"] >= 1 and any("00000_corrupt.mp4" in s for s in summary["skipped_examples"])


def test_a_folder_of_video_class_folders(tmp_path):
    from modalities.video.data import _digit_images
    images, _ = _digit_images()
    rng = np.random.RandomState(1)
    for label in ("left", "up"):
        (tmp_path / "vf" / label).mkdir(parents=True)
        for i in range(2):
            write_mp4(render_clip(images[i], label, rng, frames=8, size=32), tmp_path / "vf" / label / f"{i}.mp4")
    data = zoo.get_modality("video").load_data({"source": "folder", "path": str(tmp_path / "vf")})
    assert len(data) == 4 and list(data.label_names) == ["left", "up"]
    p = VideoProcessor(VideoProcessorConfig(num_frames=4, image_size=32))
    ex, label, name = data.record(3)
    assert ex.endswith(".mp4") and name == ex and label == 1
    assert p(ex, name=name)["pixel_values"].shape == (4, 3, 32, 32)
