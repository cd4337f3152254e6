"""VideoMAE back to transformers (docs/architecture.md, "Export"): an encoder as ``VideoMAEModel`` with the same last
hidden states; a classifier fine-tuned here with ``--head-norm`` as ``VideoMAEForVideoClassification`` with the top-1
and the probabilities ``zoo predict`` gives on every sample file; the classifiers that cannot be exact refused,
naming the option (and an audio classifier with a head norm, which the audio export cannot place). transformers'
``pipeline("video-classification")`` needs PyAV, which is not installed: the exported model is run through its class
on the frames our processor samples, processed by its ``VideoMAEImageProcessor``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import zoo
from modalities.video import VideoMAEConfig, VideoMAEEncoder, VideoProcessor, VideoProcessorConfig
from tests.conftest import zoo_main
from zoo import Classifier

transformers = pytest.importorskip("transformers")


def _encoder(seed: int = 0, **kw) -> VideoMAEEncoder:
    """A tiny VideoMAE with every weight drawn at random (the key's bias too: it is dropped on export, which no
    output may show)."""
    torch.manual_seed(seed)
    cfg = dict(image_size=32, patch_size=8, num_frames=4, tubelet_size=2, dim=32, depth=2, heads=2)
    enc = VideoMAEEncoder(VideoMAEConfig(**{**cfg, **kw})).eval()
    with torch.no_grad():
        for p in enc.parameters():
            p.normal_(0.0, 0.2)
    return enc


def _processor() -> VideoProcessor:
    return VideoProcessor(VideoProcessorConfig(num_frames=4, image_size=32))


@pytest.mark.parametrize("final_norm", [True, False])
def test_a_videomae_encoder_goes_back_to_videomae_model_with_the_same_hidden_states(final_norm, tmp_path):
    """With its final LayerNorm (``use_mean_pooling: false``) or without (``use_mean_pooling``): the same tokens."""
    enc = _encoder(final_norm=final_norm)
    assert float(enc.transformer.layers[0].attn.qkv.bias[32:64].detach().abs().sum()) > 0       # a key bias to drop
    enc.save_pretrained(tmp_path / "zoo", processor=_processor())
    res = zoo_main("export", str(tmp_path / "zoo"), str(tmp_path / "hf"), "--format", "transformers")
    assert res.returncode == 0, res.stderr
    back = transformers.VideoMAEModel.from_pretrained(tmp_path / "hf").eval()
    assert back.config.use_mean_pooling is (not final_norm)
    x = torch.randn(3, 4, 3, 32, 32)
    with torch.no_grad():
        theirs, ours = back(x).last_hidden_state, enc({"pixel_values": x}).tokens
    assert float((theirs - ours).abs().max()) < 1e-4 * max(1.0, float(ours.abs().max()))
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "VideoMAEModel" in card and "library_name: transformers" in card and str(tmp_path) not in card


def test_head_norm_moves_the_encoders_final_norm_into_the_head():
    """``finetune.head_norm``: the encoder gives up its final LayerNorm, the head normalises the mean of the tokens
    before it, starting from that norm's scale and shift; an encoder without such a switch refuses."""
    from pipelines.finetune import FinetuneModel, FinetuneSettings
    enc = _encoder()
    final = enc.transformer.norm
    x = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        before = enc.transformer.layers[1](enc.transformer.layers[0](enc.embed(x)))      # the tokens before it
    clf = FinetuneModel(enc, ["a", "b"], FinetuneSettings(head_norm=True)).eval()
    assert not enc.config.final_norm and isinstance(enc.transformer.norm, nn.Identity)
    assert torch.equal(clf.head_norm.weight, final.weight) and clf.head_norm.eps == 1e-5
    assert any(p is clf.head_norm.weight for g in clf.optimizer_groups(0.05) for p in g["params"])
    with torch.no_grad():
        want = clf.head(nn.functional.layer_norm(before.mean(1), (32,), final.weight, final.bias, 1e-5))
        assert torch.allclose(clf.logits({"pixel_values": x}), want, atol=1e-5)

    class Plain(zoo.Encoder):
        modality, architecture = "toyseq", "plain"

        @property
        def dim(self) -> int:
            return 4

        def forward(self, batch, *, return_hidden=False):
            raise NotImplementedError
    with pytest.raises(ValueError, match=r"finetune.head_norm: the toyseq encoder \(plain\) cannot give up"):
        FinetuneModel(Plain(None), ["a", "b"], FinetuneSettings(head_norm=True))


def test_a_head_norm_classifier_reloads_and_its_onnx_graph_holds_the_norm(tmp_path):
    """``head.safetensors`` holds the norm, ``classifier.json`` says so, the reloaded classifier gives the same
    logits, and the ONNX export's ``logits`` output (what a service without the zoo reads) includes the norm."""
    ort = pytest.importorskip("onnxruntime")
    from pipelines.export import export_model
    enc = _encoder(final_norm=False)
    clf = Classifier(enc, ["a", "b", "c"], processor=_processor(), head_norm=True).eval()
    with torch.no_grad():
        clf.head_norm.weight.normal_(1.0, 0.3)
        clf.head_norm.bias.normal_(0.0, 0.3)
    clf.save_pretrained(tmp_path / "clf")
    assert json.loads((tmp_path / "clf" / "classifier.json").read_text())["head_norm"] is True
    back = zoo.AutoClassifier.from_pretrained(tmp_path / "clf")
    clips = [torch.randint(0, 256, (6, 32, 32, 3), dtype=torch.uint8).numpy() for _ in range(3)]
    batch = clf.processor.collate([clf.processor(c) for c in clips])
    with torch.no_grad():
        want = clf.logits(batch)
        assert torch.allclose(back.logits(batch), want)
    export_model(tmp_path / "clf", tmp_path / "onnx", examples=(clips, ["a", "b", "c"]))
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"))
    logits = session.run(["logits"], {"pixel_values": batch["pixel_values"].numpy()})[0]
    assert torch.allclose(torch.from_numpy(logits), want, atol=1e-4)


def test_the_exported_image_processor_gives_our_inputs_where_nothing_is_resized(tmp_path):
    """``preprocessor_config.json`` resizes the short side, crops the centre and normalises as our processor: frames
    at the model's size give the same inputs; frames it resizes differ a little (PIL's bilinear on uint8, the long
    side truncated, against our antialiased bilinear on floats, rounded: docs/command-line.md, "Export")."""
    _encoder().save_pretrained(tmp_path / "zoo", processor=_processor())
    assert zoo_main("export", str(tmp_path / "zoo"), str(tmp_path / "hf"), "--format", "transformers").returncode == 0
    images = transformers.AutoImageProcessor.from_pretrained(tmp_path / "hf")
    ours = _processor()
    rng = torch.Generator().manual_seed(0)
    same = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8, generator=rng).numpy()
    theirs = images(list(same), return_tensors="pt")["pixel_values"][0]
    assert torch.allclose(theirs, ours(same)["pixel_values"], atol=1e-6)
    y, x = torch.meshgrid(torch.arange(72.0), torch.arange(96.0), indexing="ij")
    smooth = torch.stack([torch.stack([127 + 100 * torch.sin(x / 9 + t) * torch.cos(y / 7 + c) for c in range(3)], -1)
                          for t in range(4)]).to(torch.uint8).numpy()
    theirs = images(list(smooth), return_tensors="pt")["pixel_values"][0]
    mine = ours(smooth)["pixel_values"]
    assert theirs.shape == mine.shape and float((theirs - mine).abs().mean()) < 0.15


def test_classifiers_that_cannot_be_videomae_for_video_classification_exactly_are_refused(tmp_path):
    """A plain linear head (the default), a head norm after the encoder's own final norm and 3d positions are not
    transformers' program: refused, naming what to fine-tune or pretrain with."""
    plain = Classifier(_encoder(final_norm=False), ["a", "b"], processor=_processor())
    plain.save_pretrained(tmp_path / "plain")
    res = zoo_main("export", str(tmp_path / "plain"), str(tmp_path / "out1"), "--format", "transformers")
    assert res.returncode != 0 and "puts a LayerNorm between that mean and its classifier" in res.stderr
    assert "--head-norm" in res.stderr and "finetune.head_norm" in res.stderr, res.stderr
    twice = Classifier(_encoder(final_norm=True), ["a", "b"], processor=_processor(), head_norm=True)
    twice.save_pretrained(tmp_path / "twice")
    res = zoo_main("export", str(tmp_path / "twice"), str(tmp_path / "out2"), "--format", "transformers")
    assert res.returncode != 0 and "final norm before the head's norm" in res.stderr and "--head-norm" in res.stderr
    _encoder(positions="3d").save_pretrained(tmp_path / "3d", processor=_processor())
    res = zoo_main("export", str(tmp_path / "3d"), str(tmp_path / "out3"), "--format", "transformers")
    assert res.returncode != 0 and "encoder.positions is '3d'" in res.stderr and "1d" in res.stderr, res.stderr
    assert not any((tmp_path / name).exists() for name in ("out1", "out2", "out3"))


def test_an_audio_classifier_with_a_head_norm_is_refused_by_the_audio_export(tmp_path):
    """transformers' audio classifiers have no norm in their head: a head norm (set through the API: fine-tuning
    refuses it for audio) is refused rather than dropped."""
    from modalities.audio import AudioProcessor, AudioProcessorConfig, Wav2Vec2Config, Wav2Vec2Encoder
    from tests.test_audio import TINY
    enc = Wav2Vec2Encoder(Wav2Vec2Config(**TINY))
    with pytest.raises(ValueError, match="cannot give up the norm after its last layer"):
        enc.take_final_norm()
    Classifier(enc, ["a", "b"], processor=AudioProcessor(AudioProcessorConfig()),
               head_norm=True).save_pretrained(tmp_path / "clf")
    res = zoo_main("export", str(tmp_path / "clf"), str(tmp_path / "out"), "--format", "transformers")
    assert res.returncode != 0 and "head_norm" in res.stderr and "projector and classifier" in res.stderr, res.stderr


def test_a_fine_tuned_videomae_classifier_serves_as_videomae_for_video_classification(tmp_path, monkeypatch):
    """A VideoMAE-shaped transformers checkpoint fine-tuned here with ``--head-norm`` on the video sample data,
    exported with ``--format transformers``: ``VideoMAEForVideoClassification`` on the frames our processor samples,
    through the exported ``VideoMAEImageProcessor``, sees our inputs and gives every sample file the top-1 label and
    the probabilities ``zoo predict`` gives (logits within 1e-4)."""
    from torchcodec.decoders import VideoDecoder

    from modalities.video.processor import frame_indices
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))           # the checkpoint's conversion
    torch.manual_seed(0)
    cfg = transformers.VideoMAEConfig(image_size=32, patch_size=8, num_frames=8, tubelet_size=2, hidden_size=32,
                                      num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                      use_mean_pooling=False)                # an encoder with a final LayerNorm
    transformers.VideoMAEModel(cfg).save_pretrained(tmp_path / "hf")
    sample = zoo.get_modality("video").sample_data(tmp_path / "data")
    ft = zoo_main("finetune", str(tmp_path / "hf"), "--data", str(sample.data), "--head-norm", "--steps", "8",
                  "--batch-size", "8", "--lr", "0.003", "--no-baseline", "--output", str(tmp_path / "ft"))
    assert ft.returncode == 0, ft.stderr
    model = tmp_path / "ft" / "model"
    assert json.loads((model / "classifier.json").read_text())["head_norm"] is True
    assert json.loads((model / "config.json").read_text())["encoder"]["final_norm"] is False
    res = zoo_main("export", str(model), str(tmp_path / "hf-clf"), "--format", "transformers")
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "hf-clf" / "config.json").read_text())["architectures"] == [
        "VideoMAEForVideoClassification"]
    card = (tmp_path / "hf-clf" / "README.md").read_text()
    assert "pipeline_tag: video-classification" in card and "VideoMAEForVideoClassification" in card
    assert str(tmp_path) not in card
    files = sorted(Path(sample.data).rglob("*.mp4"))
    pred = zoo_main("predict", str(model), *map(str, files), "--json", "--top-k", "3")
    assert pred.returncode == 0, pred.stderr
    ours = {json.loads(line)["input"]: json.loads(line)["predictions"] for line in pred.stdout.splitlines()}
    assert len({p[0]["label"] for p in ours.values()}) > 1              # the top-1 is not one label everywhere
    clf = zoo.AutoClassifier.from_pretrained(model)
    serve = transformers.VideoMAEForVideoClassification.from_pretrained(tmp_path / "hf-clf").eval()
    images = transformers.AutoImageProcessor.from_pretrained(tmp_path / "hf-clf")
    for path in files:
        decoder = VideoDecoder(str(path), dimension_order="NHWC")
        frames = decoder.get_frames_at(indices=frame_indices(len(decoder), clf.processor.config, path.name).tolist())
        inputs = images(list(frames.data.numpy()), return_tensors="pt")
        mine = clf.processor.collate([clf.processor(str(path))])
        assert torch.allclose(inputs["pixel_values"], mine["pixel_values"], atol=1e-6), path
        with torch.no_grad():
            logits = serve(**inputs).logits
            assert torch.allclose(logits, clf.logits(mine), atol=1e-4), path
        probs = logits.softmax(-1)[0]
        top = int(probs.argmax())
        assert serve.config.id2label[top] == ours[str(path)][0]["label"], path
        for entry in ours[str(path)]:
            assert float(probs[serve.config.label2id[entry["label"]]]) == pytest.approx(entry["score"], abs=1e-4)
