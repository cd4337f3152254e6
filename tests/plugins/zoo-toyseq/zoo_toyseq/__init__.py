"""A small out-of-tree modality: multivariate sequences, masked-reconstruction pretraining.

It proves that a third-party package adds a modality to ssl-zoo through the ``zoo.modalities`` entry
point alone, and gives the engine tests a fast model to train.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from zoo import (
    Architecture,
    BadExample,
    Config,
    Encoder,
    EncoderOutput,
    ExampleSet,
    Modality,
    Pretrainer,
    PretrainOutput,
    Processor,
    ProcessorConfig,
)
from zoo.data import folder_source
from zoo.layers import TransformerEncoder, masked_mean, sinusoidal_positions
from zoo.masking import random_mask
from zoo.objectives import masked_mse
from zoo.plugin import SampleData, numeric_array, source_loader


@dataclass
class ToyProcessorConfig(ProcessorConfig):
    features: int = 4
    max_len: int = 64

    def validate(self) -> None:
        super().validate()
        self.check(self.features >= 1, "features", "must be >= 1")
        self.check(self.max_len >= 1, "max_len", "must be >= 1")


class ToyProcessor(Processor):
    config_class = ToyProcessorConfig

    def __init__(self, config: ToyProcessorConfig | None = None) -> None:
        super().__init__(config)
        self.mean = torch.zeros(self.config.features)
        self.std = torch.ones(self.config.features)

    def _check(self, example: Any, name: str) -> Tensor:
        if isinstance(example, (str, Path)):          # a file of the folder source: read it here, in the worker
            try:
                example = self.read(str(example))
            except (OSError, ValueError) as err:
                raise BadExample(str(example), "path", f"not a .npy array file ({err})") from None
        x = numeric_array(example, name, "values")       # text, ragged, complex: a BadExample naming the field
        if x.dim() != 2 or x.shape[1] != self.config.features:
            raise BadExample(name, "values", f"expected shape [length, {self.config.features}], "
                                             f"got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise BadExample(name, "values", "zero-length sequence")
        if not bool(torch.isfinite(x).all()):
            raise BadExample(name, "values", "contains NaN or inf")
        return x

    def fit(self, examples: Any) -> ToyProcessor:
        xs = torch.cat([self._check(e, str(i)) for i, e in enumerate(examples)])
        self.mean, self.std = xs.mean(dim=0), xs.std(dim=0).clamp(min=1e-6)
        return self

    def __call__(self, example: Any, *, name: str | None = None) -> dict[str, Tensor]:
        x = self._check(example, name or "input")[: self.config.max_len]
        return {"values": (x - self.mean) / self.std}

    def length(self, example: Any) -> int | None:
        return None if isinstance(example, (str, Path)) else min(len(example), self.config.max_len)

    def collate(self, items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        lengths = torch.tensor([it["values"].shape[0] for it in items])
        values = nn.utils.rnn.pad_sequence([it["values"] for it in items], batch_first=True)
        pad = torch.arange(values.shape[1])[None, :] >= lengths[:, None]
        return {"values": values, "padding_mask": pad}

    def read(self, path: str) -> Any:
        return np.load(path, allow_pickle=False)

    def state(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.mean, self.std = torch.tensor(state["mean"]), torch.tensor(state["std"])


@dataclass
class ToyEncoderConfig(Config):
    features: int = 4
    dim: int = 32
    depth: int = 2
    heads: int = 2
    max_len: int = 512

    def validate(self) -> None:
        self.check(self.dim % self.heads == 0, "dim", "must be divisible by heads")


@dataclass
class ToyPretrainingConfig(Config):
    mask_ratio: float = 0.5

    def validate(self) -> None:
        self.check(0.0 < self.mask_ratio < 1.0, "mask_ratio", "must lie in (0, 1)")


class ToyEncoder(Encoder):
    config_class = ToyEncoderConfig

    def __init__(self, config: ToyEncoderConfig) -> None:
        super().__init__(config)
        self.embed = nn.Linear(config.features, config.dim)
        self.mask_token = nn.Parameter(torch.zeros(config.dim))
        self.register_buffer("pos", sinusoidal_positions(config.max_len, config.dim), persistent=False)
        self.body = TransformerEncoder(config.dim, config.depth, config.heads)

    @property
    def dim(self) -> int:
        return self.config.dim

    def forward(self, batch: dict[str, Tensor], *, hidden_mask: Tensor | None = None,
                return_hidden: bool = False) -> EncoderOutput:
        x = self.embed(batch["values"])
        if hidden_mask is not None:
            x = torch.where(hidden_mask[..., None], self.mask_token.to(x.dtype), x)
        x = x + self.pos[: x.shape[1]]
        pad = batch["padding_mask"]
        tokens, hidden = self.body(x, pad, return_hidden=True)
        return EncoderOutput(tokens, pad, masked_mean(tokens, pad), hidden if return_hidden else None)


class ToyPretrainer(Pretrainer):
    def __init__(self, encoder: ToyEncoder, config: ToyPretrainingConfig, total_steps: int = 1) -> None:
        super().__init__(encoder, config, total_steps)
        self.head = nn.Linear(encoder.dim, encoder.config.features)

    def forward(self, batch: dict[str, Tensor], generator: torch.Generator) -> PretrainOutput:
        values, pad = batch["values"], batch["padding_mask"]
        lengths = (~pad).sum(dim=1)
        mask = random_mask(values.shape[0], values.shape[1], self.config.mask_ratio, generator=generator,
                           valid_lengths=lengths, device=values.device)
        out = self.encoder(batch, hidden_mask=mask)
        loss = masked_mse(self.head(out.tokens), values, mask, norm_targets=False)
        return PretrainOutput(loss, {"masked": float(mask.sum())})


def synthetic(spec: dict[str, Any]) -> ExampleSet:
    """``{source: synthetic, n, seed, min_len, max_len}``: 3 classes of noisy sines of rising frequency."""
    n, seed = int(spec.get("n", 64)), int(spec.get("seed", 0))
    lo, hi = int(spec.get("min_len", 16)), int(spec.get("max_len", 40))
    rng = np.random.default_rng(seed)
    examples, labels = [], []
    for i in range(n):
        label = i % 3
        length = int(rng.integers(lo, hi + 1))
        t = np.arange(length)[:, None]
        phase = rng.uniform(0, 2 * math.pi, size=(1, 4))
        x = np.sin(0.25 * (label + 1) * t + phase) + 0.1 * rng.standard_normal((length, 4))
        examples.append(x.astype(np.float32))
        labels.append(label)
    return ExampleSet(examples, labels, [f"synthetic[{i}]" for i in range(n)], ["slow", "medium", "fast"])


def folder(spec: dict[str, Any]) -> ExampleSet:
    """``--data FOLDER``: ``.npy`` files of ``[length, features]``, in one subfolder per class."""
    return folder_source(spec, (".npy",), "toyseq")


def sample_data(root: Path) -> SampleData:
    """The conformance suite's tiny labelled set: ``root/seqs/<speed>/<i>.npy``, each class's sines shifted by
    its own offset (what a linear model on the mean tells apart)."""
    data = synthetic({"n": 45, "seed": 7})
    out = Path(root) / "seqs"
    for i, (x, y) in enumerate(zip(data.examples, data.labels)):
        (out / data.label_names[y]).mkdir(parents=True, exist_ok=True)
        np.save(out / data.label_names[y] / f"{i}.npy", x + np.float32(1.5 * y))
    files = sorted(out.rglob("*.npy"))
    return SampleData(data=out, recipe="toyseq-tiny", num_classes=3, predict_inputs=files[:2],
                      predict_names=[str(f) for f in files[:2]], predict_all=files,
                      pretrain_overrides=["train.steps=4"], finetune_args=["--lr", "0.01"])


# ``source: hf`` (parquet, csv, a Hub id…) reads the sequence from a ``values`` column of [length, features]
load_data = source_loader("toyseq", {"synthetic": synthetic, "folder": folder}, "synthetic", hf_input="values")

MODALITY = Modality(
    name="toyseq",
    description="toy multivariate sequences (out-of-tree example plugin)",
    processor=ToyProcessor,
    architectures={"toyseq-mae": Architecture("toyseq-mae", ToyEncoderConfig, ToyEncoder, ToyPretrainer,
                                              ToyPretrainingConfig)},
    load_data=load_data,
    folder_source="folder",
    sample_data=sample_data,
    recipes=Path(__file__).parent / "recipes",
    usage_example="import numpy as np\nexample = np.random.randn(30, 4).astype('float32')",
)
