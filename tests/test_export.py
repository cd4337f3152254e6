"""Export's refusals (docs/architecture.md, "Export"): a model that does not trace is named by op, module and
modality; a graph whose external data points outside its folder is refused. The round trip of every installed
modality is in the conformance suite (tests/test_conformance.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from zoo import Encoder, EncoderOutput, FormatError

onnx = pytest.importorskip("onnx")


class _Gate(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if float(x.sum()) > 0:                  # a Python branch on a tensor's value: no graph can hold it
            return x * 2
        return x


class _Toy(Encoder):
    modality, architecture = "toyseq", "gated"

    def __init__(self) -> None:
        super().__init__(None)
        self.proj, self.gate = nn.Linear(3, 4), _Gate()

    @property
    def dim(self) -> int:
        return 4

    def forward(self, batch, *, return_hidden=False):
        h = self.gate(self.proj(batch["x"]))
        return EncoderOutput(h, torch.zeros(h.shape[:2], dtype=torch.bool), h.mean(1))


class _Processor:
    modality = "toyseq"

    def __call__(self, example, name=None):
        return {"x": torch.as_tensor(example, dtype=torch.float32)}

    def collate(self, items):
        return {"x": torch.stack([i["x"] for i in items])}


def test_a_model_that_does_not_export_is_named_by_construct_module_and_modality(tmp_path):
    from zoo.export import ExportError, export_onnx
    examples = [torch.randn(5, 3).tolist() for _ in range(3)]
    with pytest.raises(ExportError) as err:
        export_onnx(_Toy().eval(), _Processor(), examples, ["a", "b", "c"], out=tmp_path / "out")
    text = str(err.value)
    assert "toyseq encoder (gated)" in text and "module 'encoder.gate' (_Gate)" in text, text
    assert "data-dependent" in text or "op " in text, text


def test_external_data_outside_the_folder_is_refused(tmp_path):
    from onnx import TensorProto, helper

    from zoo.onnx_runtime import check_graph
    weight = helper.make_tensor("w", TensorProto.FLOAT, [1], [0.0])
    weight.data_location = TensorProto.EXTERNAL
    del weight.float_data[:]
    for key, value in (("location", "../../etc/secret.bin"), ("offset", "0"), ("length", "4")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    folder = tmp_path / "exported"
    folder.mkdir()
    Path(folder / "model.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(FormatError, match=r"model.onnx: initializer 'w' points its data outside the folder"):
        check_graph(folder / "model.onnx", {"opset": 18})
    with pytest.raises(FormatError, match=r"opset is 18, config.json's export block says 17"):
        check_graph(folder / "model.onnx", {"opset": 17})


@pytest.mark.parametrize("kind", ["wav2vec2", "hubert", "data2vec-audio", "wavlm"])
def test_a_converted_audio_encoder_goes_back_to_its_transformers_family(kind, tmp_path):
    """transformers → zoo (``zoo convert``) → ``zoo export --format transformers`` → transformers: the same class and
    the same outputs."""
    transformers = pytest.importorskip("transformers")
    from tests.conftest import zoo_main
    from tests.test_real_weights import TINY, audio_model
    hf = audio_model(kind, TINY)
    hf.save_pretrained(tmp_path / "hf")
    assert zoo_main("convert", str(tmp_path / "hf"), str(tmp_path / "zoo")).returncode == 0
    res = zoo_main("export", str(tmp_path / "zoo"), str(tmp_path / "back"), "--format", "transformers")
    assert res.returncode == 0, res.stderr
    back = transformers.AutoModel.from_pretrained(tmp_path / "back").eval()
    assert type(back) is type(hf)
    x = torch.randn(2, 5000)
    with torch.no_grad():
        assert torch.allclose(back(x).last_hidden_state, hf(x).last_hidden_state, atol=1e-5)


def test_a_fine_tuned_hubert_classifier_serves_through_the_transformers_pipeline(tmp_path):
    """A classifier fine-tuned here from a HuBERT-shaped checkpoint, exported with ``--format transformers``, is a
    ``HubertForSequenceClassification`` that ``pipeline("audio-classification")`` loads and that gives every sample
    file the top-1 label (and the probabilities) ``zoo predict`` gives."""
    transformers = pytest.importorskip("transformers")
    import json

    import soundfile as sf

    import zoo
    from tests.conftest import zoo_main
    from tests.test_real_weights import TINY, audio_model
    audio_model("hubert", TINY).save_pretrained(tmp_path / "hf")
    sample = zoo.get_modality("audio").sample_data(tmp_path / "data")
    ft = zoo_main("finetune", str(tmp_path / "hf"), "--data", str(sample.data), "--mode", "full", "--steps", "20",
                  "--batch-size", "8", "--lr", "0.003", "--output", str(tmp_path / "ft"))
    assert ft.returncode == 0, ft.stderr
    res = zoo_main("export", str(tmp_path / "ft" / "model"), str(tmp_path / "hf-clf"), "--format", "transformers")
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "hf-clf" / "config.json").read_text())["architectures"] == [
        "HubertForSequenceClassification"]
    card = (tmp_path / "hf-clf" / "README.md").read_text()
    assert "pipeline_tag: audio-classification" in card and str(tmp_path) not in card
    files = sorted(Path(sample.data).rglob("*.wav"))
    pred = zoo_main("predict", str(tmp_path / "ft" / "model"), *map(str, files), "--json", "--top-k", "2")
    assert pred.returncode == 0, pred.stderr
    ours = {json.loads(line)["input"]: json.loads(line)["predictions"] for line in pred.stdout.splitlines()}
    serve = transformers.pipeline("audio-classification", model=str(tmp_path / "hf-clf"), device="cpu")
    for path in files:
        wave, rate = sf.read(path, dtype="float32")
        theirs = serve({"raw": wave, "sampling_rate": rate}, top_k=2)
        assert theirs[0]["label"] == ours[str(path)][0]["label"], path
        assert theirs[0]["score"] == pytest.approx(ours[str(path)][0]["score"], abs=1e-4), path


class _Plain(_Toy):
    def __init__(self) -> None:
        super().__init__()
        self.gate = nn.Identity()


def test_an_exported_program_holds_no_pickle_and_one_that_does_is_refused(tmp_path):
    """``--format exported-program``: the archive keeps no example inputs and no pickled tensor, loads and matches
    eager; an archive with pickled example inputs, a pickled weight or an entry of another kind is refused before
    ``torch.export.load`` reads it, naming the entry; the same model with a data-dependent branch is named as the
    ONNX export names it."""
    import json
    import zipfile

    from zoo.export import ExportError
    from zoo.exported_program import PROGRAM_NAME, check_archive, export_program, load_program
    examples = [torch.randn(5, 3).tolist() for _ in range(3)]
    encoder = _Plain().eval()
    block = export_program(encoder, _Processor(), examples, ["a", "b", "c"], out=tmp_path / "ok")
    path = tmp_path / "ok" / PROGRAM_NAME
    assert block["format"] == "exported-program" and len(block["checks"]) == 3
    x = torch.randn(2, 7, 3)                                             # another batch and length: dynamic
    with torch.no_grad():
        (pooled, tokens, _), want = load_program(path)(x), encoder({"x": x})
    assert tokens.shape == (2, 7, 4) and torch.allclose(pooled, want.pooled, atol=1e-6)
    with zipfile.ZipFile(path) as archive:
        entries = {i.filename: archive.read(i) for i in archive.infolist()}

    def rewrite(name: str, change) -> Path:
        bad = tmp_path / f"{name}.pt2"
        with zipfile.ZipFile(bad, "w") as archive:
            for entry, data in entries.items():
                archive.writestr(entry, change(entry, data))
        return bad
    inputs = rewrite("inputs", lambda e, d: b"\x80\x04N." if "/sample_inputs/" in e else d)
    with pytest.raises(FormatError, match="pickled example inputs"):
        check_archive(inputs)
    weights = next(e for e in entries if e.endswith("model_weights_config.json"))

    def pickled(entry, data):
        if entry != weights:
            return data
        config = json.loads(data)
        first = next(iter(config["config"]))
        config["config"][first]["use_pickle"] = True
        return json.dumps(config).encode()
    with pytest.raises(FormatError, match="as pickles"):
        check_archive(rewrite("weights", pickled))
    extra = tmp_path / "extra.pt2"
    with zipfile.ZipFile(extra, "w") as archive:
        for entry, data in entries.items():
            archive.writestr(entry, data)
        archive.writestr(f"{next(iter(entries)).split('/')[0]}/data/constants/custom_obj_0", b"\x80\x04N.")
    with pytest.raises(FormatError, match="custom_obj_0"):
        check_archive(extra)
    with pytest.raises(ExportError, match=r"toyseq encoder \(gated\).*module 'encoder.gate' \(_Gate\)"):
        export_program(_Toy().eval(), _Processor(), examples, ["a", "b", "c"], out=tmp_path / "gated")


def test_int8_agreement_by_hand():
    """What an int8 graph is held to (``zoo.export.agreement``): the smallest pooled cosine and the top-1 agreement."""
    import numpy as np

    from zoo.export import agreement
    ref = [np.array([[2.0, 1.0], [0.0, 3.0]]), np.array([[1.0, 0.0], [0.0, 1.0]])]
    got = [np.array([[2.0, 1.0], [4.0, 3.0]]), np.array([[3.0, 0.0], [1.0, 1.0]])]
    out = agreement(ref, got, ["logits", "pooled"])
    assert out["top1_agreement"] == 0.5                          # the second example's argmax moved from 1 to 0
    assert out["pooled_cosine"] == pytest.approx(1 / np.sqrt(2), abs=1e-6)     # (0, 1)·(1, 1) / √2; the first is 1
    assert agreement(ref[1:], got[1:], ["pooled"]).keys() == {"pooled_cosine"}   # an encoder: no top-1
