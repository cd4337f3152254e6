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
