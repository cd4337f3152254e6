"""The modality contract (docs/architecture.md, "The modality contract"): Processor, Encoder, Pretrainer,
Config, bundled in a ``Modality``."""

from __future__ import annotations

from abc import ABC, ABCMeta, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from . import hub
from .collapse import CollapseRule
from .config import Config
from .data import ExampleSet, StreamSet, hf_source
from .paths import expand

__all__ = [
    "BadExample",
    "Unreadable",
    "decoder_message",
    "numeric_array",
    "example_name",
    "EncoderOutput",
    "PretrainOutput",
    "Processor",
    "Encoder",
    "Pretrainer",
    "Architecture",
    "ExampleSet",
    "StreamSet",
    "Modality",
    "Protocol",
    "ProcessorConfig",
    "source_loader",
    "SampleData",
    "read_examples",
    "Window",
    "window_spans",
]


class BadExample(ValueError):
    """An input the processor cannot use. The message names the example and the field."""

    def __init__(self, example: Any, field: str, reason: str) -> None:
        self.example, self.field, self.reason = example, field, reason
        name = str(example)                     # an unnamed example is already called "example I"
        super().__init__(f"{'' if name.startswith('example ') else 'example '}{name}: field {field!r}: {reason}")

    def __str__(self) -> str:          # also for subclasses that are KeyErrors (which would quote the text)
        return str(self.args[0])


def decoder_message(err: BaseException, path: str) -> str:
    """A media decoder's error as a user reads it, for a :class:`BadExample`: its first line without the decoder's
    own source location (torchcodec says ``SingleStreamDecoder, /__w/torchcodec/.../SingleStreamDecoder.cpp:41,
    ...``) or the file's path again (the message names the example already), at most 200 characters."""
    import re
    said = next((ln for ln in str(err).strip().splitlines() if ln.strip() and "github.com" not in ln),
                type(err).__name__)
    said = re.sub(r"^\w+, [^,]*\.(?:cpp|cc|c|h|hpp):\d+, ", "", said)
    said = said.replace(f"Error opening {path!r}: ", "").replace(f"{path} ", "").replace(path, "the file")
    return said.strip()[:200] or type(err).__name__


class Unreadable:
    """An example a source could not read, in its place: a file or table holding many examples (e.g. graphs in node
    and edge tables) is not refused whole for one bad example. Processing one raises its :class:`BadExample`
    (``pipelines.data.process_one`` for any processor; the processor of a source that yields them, when called on
    one directly), so ``skip_bad`` skips and counts it as any other; runs find them before the first step
    (``pipelines.data.drop_unreadable``)."""

    def __init__(self, error: BadExample) -> None:
        self.error = error

    def __repr__(self) -> str:
        return f"Unreadable({self.error})"


def example_name(example: Any, name: str | None) -> str:
    """What messages call an example: the given name, else a file's path, else ``"input"``."""
    return name or (str(example) if isinstance(example, (str, Path)) else "input")


def numeric_array(value: Any, example: Any, field: str, *, integer: bool = False) -> torch.Tensor:
    """``value`` as a real tensor (float32, or int64 with ``integer``), else :class:`BadExample` naming the
    field: ragged lists, strings and objects, complex numbers (never cast to real) and, with ``integer``,
    non-integral values (never truncated, e.g. float edge indices ``1.7``)."""
    import numpy as np
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value)
    except ValueError as err:                       # ragged nested lists
        raise BadExample(example, field, f"not a rectangular array ({err})") from None
    if arr.dtype.kind == "c":
        raise BadExample(example, field, "complex values (a real array is expected; take .real or abs() first)")
    if arr.dtype.kind not in "biuf":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError):
            raise BadExample(example, field, f"not an array of numbers (dtype {arr.dtype})") from None
    if integer:
        if arr.dtype.kind == "f":
            if not np.isfinite(arr).all() or (arr != np.round(arr)).any():
                raise BadExample(example, field, "non-integer values where indices are expected")
        return torch.from_numpy(arr.astype(np.int64))
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(arr, dtype=np.float32)
    overflowed = np.isinf(out) if arr.dtype.itemsize > 4 else None
    if overflowed is not None and overflowed.any() and not np.isinf(arr[overflowed]).all():
        raise BadExample(example, field, "values beyond float32's range (±3.4e38): rescale the data")
    return torch.from_numpy(out)


@dataclass
class EncoderOutput:
    """``tokens [B, N, D]``, ``padding_mask [B, N]`` (``True`` = padding), ``pooled [B, D]``;
    ``hidden`` holds every layer's tokens when asked for."""

    tokens: Tensor
    padding_mask: Tensor
    pooled: Tensor
    hidden: list[Tensor] | None = None


@dataclass
class PretrainOutput:
    loss: Tensor | None
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class ProcessorConfig(Config):
    """Base of every processor config. ``fit_examples``: :meth:`Processor.fit` sees at most this many training
    examples (a seeded sample of a map-style set, the head of a stream), so fitting costs bounded memory."""

    fit_examples: int = 1000

    def validate(self) -> None:
        self.check(self.fit_examples >= 1, "fit_examples", "must be >= 1")


@dataclass
class Window:
    """One window of a long input (docs/architecture.md, "The modality contract"): its span ``[start, end)`` in
    ``unit`` (seconds, or frames where the input has no time base; ``""`` for a whole example that is not
    windowed), the processed ``item`` the model embeds, the ``name`` outputs call the window, and a ``note`` saying
    what processing left out of it (e.g. older events), or ``None``."""

    start: float
    end: float
    unit: str
    item: dict[str, Tensor]
    name: str
    note: str | None = None

    @property
    def weight(self) -> float:
        """How much of the input the window covers (its length): the weight of its row in a mean over windows."""
        return self.end - self.start


MAX_WINDOW_SECONDS = 7 * 24 * 3600.0     # a window or hop beyond a week is a typo (1e308 overflowed), refused


def check_window_seconds(window: float | None, hop: float | None) -> None:
    """``--window``/``--hop`` in seconds: finite, > 0 and at most :data:`MAX_WINDOW_SECONDS`, else a ValueError
    naming the flag (docs/reliability.md); a window longer than its input is the whole input, one window."""
    for flag, value in (("--window", window), ("--hop", hop)):
        if value is not None and not 0 < value <= MAX_WINDOW_SECONDS:
            raise ValueError(f"{flag} {value:g}: must be > 0 and at most {MAX_WINDOW_SECONDS:g} seconds (a week); "
                             "a window longer than an input covers the whole input")


def window_spans(length: int, window: int, hop: int) -> list[tuple[int, int]]:
    """``[start, end)`` spans of ``window`` steps every ``hop`` steps that cover ``length`` steps: the last one
    ends at ``length`` and may be shorter (it is longer than ``window - hop``); an input of at most one window
    is one span. Checked by hand in ``tests/test_long_inputs.py``."""
    if length < 1 or window < 1 or not 1 <= hop <= window:
        raise ValueError(f"windows need length >= 1, window >= 1 and 1 <= hop <= window; got length {length}, "
                         f"window {window}, hop {hop}")
    if length <= window:
        return [(0, length)]
    count = -(-(length - window) // hop) + 1
    return [(k * hop, min(k * hop + window, length)) for k in range(count)]


class Processor(ABC):
    """Raw example → tensors; ``collate`` pads a list into a batch; state saved as ``preprocessor.json``.

    Subclasses implement ``__call__`` and ``collate`` and, when they learn statistics, ``fit`` and
    ``state``/``load_state``. ``__call__`` raises :class:`BadExample` on unusable input. The modality name is
    set by the :class:`Modality` that names the class.
    """

    modality: ClassVar[str] = ""
    config_class: ClassVar[type[Config]] = ProcessorConfig
    windowed: ClassVar[bool] = False       # True: :meth:`windows` cuts a long input into several windows

    def __init__(self, config: Config | None = None) -> None:
        self.config = config if config is not None else self.config_class()

    # --- what subclasses implement ---------------------------------------------------------
    @abstractmethod
    def __call__(self, example: Any, *, name: str | None = None) -> dict[str, Tensor]:
        """One raw example → tensors (runs in DataLoader workers)."""

    def augmented(self, example: Any, *, name: str | None = None,
                  generator: torch.Generator) -> dict[str, Tensor]:
        """One *training* example with this processor's training augmentation, every random draw taken from
        ``generator`` (the pipeline seeds it from the run's seed, the epoch and the example, so a resumed run draws
        the same and each epoch draws anew). Inference never calls it. Default: no augmentation beyond
        :meth:`cropped`."""
        return self.cropped(example, name=name, generator=generator)

    def augments(self) -> bool:
        """Whether :meth:`augmented` differs from ``__call__`` for this processor as configured."""
        return False

    def cropped(self, example: Any, *, name: str | None = None, generator: torch.Generator) -> dict[str, Tensor]:
        """One *training* example cut, where it is longer than the model takes at once, to that length at a random
        place drawn from ``generator`` (seeded as for :meth:`augmented`), so that training over epochs sees all of a
        long input, not only its start (docs/architecture.md, "Long inputs"). The pipeline calls it for every
        training example when :meth:`crops` holds and augmentation is off. Default: ``__call__``."""
        return self(example, name=name)

    def crops(self) -> bool:
        """Whether :meth:`cropped` differs from ``__call__`` for this processor as configured."""
        return False

    def pools_windows(self) -> bool:
        """Whether prediction and evaluation see an input whole through its windows (:meth:`windows`): each window
        encoded, the pooled embeddings averaged weighted by the windows' length (:func:`zoo.embedding.window_means`,
        as ``zoo embed`` does), rather than ``__call__``'s view of it. Default: ``False``."""
        return False

    def long_inputs(self) -> str | None:
        """What a model sees of an input longer than it takes at once, in training and at inference, in words naming
        the settings that decide it: what fine-tuning logs and the model card say. ``None``: nothing is cut."""
        return None

    @abstractmethod
    def collate(self, items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Processed items → one batch with padding masks."""

    def fit(self, examples: Sequence[Any]) -> Processor:
        """Learn what the processor needs from training data (statistics, vocabularies); ``examples`` is a
        bounded sample (``fit_examples``)."""
        return self

    def align_to(self, old: Processor) -> None:
        """After :meth:`fit` on new data for a model fitted with ``old`` (``zoo pretrain --init MODEL --refit``):
        take back from ``old`` whatever indexes the encoder's weights (columns, their order, vocabularies), keeping
        the statistics just fitted, so that every learned embedding keeps its meaning; raise ``ValueError`` naming
        what cannot be aligned. The default: nothing indexes weights."""
        return None

    def process_batch(self, examples: Sequence[Any], names: Sequence[str]) -> list[dict[str, Tensor]]:
        """Many examples at once (override to vectorise, e.g. a table's rows); raises :class:`BadExample`."""
        return [self(ex, name=n) for ex, n in zip(examples, names)]

    def length(self, example: Any) -> int | None:
        """A cheap size of a raw example (e.g. samples after resampling) for length-grouped batches, read
        without decoding; ``None`` when unknown."""
        return None

    def windows(self, example: Any, *, name: str | None = None, window: float | None = None,
                hop: float | None = None) -> Iterator[Window]:
        """The processed windows of one raw example, in order, made one at a time (memory holds one window, not
        the input): what ``zoo embed`` and :func:`zoo.embedding.embed_long` embed. ``window``/``hop`` (seconds)
        override the processor's own. Default (a processor that is not :attr:`windowed`): the whole example as
        one window, with :meth:`left_out` as its note."""
        if window is not None or hop is not None:
            raise ValueError(f"{type(self).__name__} does not cut its examples into windows: --window/--hop apply "
                             "to windowed modalities only")
        name = example_name(example, name)
        yield Window(0.0, 1.0, "", self(example, name=name), name, self.left_out(example, name=name))

    def left_out(self, example: Any, *, name: str | None = None) -> str | None:
        """What ``__call__`` leaves out of this example (e.g. a history cut to its most recent events), said in
        ``zoo embed``'s output; ``None`` when it keeps everything."""
        return None

    def read(self, path: str) -> Any:
        """Read one raw example from a file (used by ``zoo embed``)."""
        raise NotImplementedError(f"{type(self).__name__} cannot read files")

    def read_many(self, path: str) -> list[Any]:
        """Every example a file holds (one for a clip; every row for a table)."""
        return [self.read(path)]

    def read_named(self, path: str) -> list[tuple[str, Any]]:
        """Every example a file holds with its name, as predictions and embeddings name it: the path of a file
        of one example, ``path[row]`` for a table's rows (event logs and graphs: their entity or graph ids)."""
        found = self.read_many(path)
        return [(path, found[0])] if len(found) == 1 else [(f"{path}[{j}]", ex) for j, ex in enumerate(found)]

    def input_columns(self) -> list[str] | None:
        """The named columns a fitted processor reads as inputs (tables, event logs); ``None`` where examples
        have no columns. Fine-tuning refuses a label column found here."""
        return None

    def objective_config(self) -> dict[str, Any]:
        """Pretraining-objective values that follow from the fitted processor (e.g. the pixel normalisation a
        reconstruction target undoes); merged into the recipe's ``pretraining`` section when a run is built."""
        return {}

    def encoder_config(self) -> dict[str, Any]:
        """Encoder config values that follow from what ``fit`` learned (e.g. a table's feature counts)."""
        return {}

    def state(self) -> dict[str, Any]:
        """Learned state saved beside the config in ``preprocessor.json``."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state, got keys {sorted(state)}")

    # --- shared behaviour ------------------------------------------------------------------
    def process(self, examples: Sequence[Any], *, skip_bad: bool = False,
                names: Sequence[str] | None = None) -> tuple[list[dict[str, Tensor]], list[str]]:
        """Process many examples; with ``skip_bad`` bad ones are skipped and returned as messages."""
        items, skipped = [], []
        for i, ex in enumerate(examples):
            name = names[i] if names is not None else str(i)
            try:
                items.append(self(ex, name=name))
            except BadExample as err:
                if not skip_bad:
                    raise
                skipped.append(str(err))
        return items, skipped

    def to_dict(self) -> dict[str, Any]:
        return {"modality": self.modality, "processor": type(self).__name__,
                "config": self.config.to_dict(), "state": self.state()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Processor:
        if data.get("modality") != cls.modality:
            raise ValueError(f"preprocessor.json is for modality {data.get('modality')!r}, "
                             f"not {cls.modality!r}")
        proc = cls(cls.config_class.from_dict(data.get("config", {}), where="preprocessor.config"))
        proc.load_state(data.get("state", {}))
        return proc

    def save_pretrained(self, folder: str | Path) -> Path:
        return hub.save_processor(self, folder)

    @classmethod
    def from_pretrained(cls, id_or_path: str | Path, **hub_kwargs: Any) -> Processor:
        return cls.from_dict(hub.load_processor_dict(id_or_path, **hub_kwargs))


def read_examples(processor: Processor, path: str) -> list[tuple[str, Any]]:
    """``processor.read_named(path)``, with any failure to read the file — a table without its columns, a file of
    another kind, a cut file — a :class:`BadExample` naming the file (what ``zoo embed``/``zoo predict`` use)."""
    try:
        return processor.read_named(path)
    except BadExample:
        raise
    except Exception as err:                  # noqa: BLE001 - this file could not be read: name it
        message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
        raise BadExample(path, "file", message.replace(f"{path}: ", "")) from err


class Encoder(nn.Module, metaclass=ABCMeta):
    """What users load and fine-tune: ``forward(batch) → EncoderOutput``. ``modality`` and ``architecture`` are
    set by the :class:`Modality` that lists the class."""

    modality: ClassVar[str] = ""
    architecture: ClassVar[str] = ""
    config_class: ClassVar[type[Config]] = Config
    # zoo export's tracer (zoo.export): "dynamo" (torch.export) or "torchscript" (recurrent layers)
    onnx_exporter: ClassVar[str] = "dynamo"

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config

    @property
    @abstractmethod
    def dim(self) -> int:
        """Width of ``pooled``."""

    @abstractmethod
    def forward(self, batch: dict[str, Tensor], *, return_hidden: bool = False) -> EncoderOutput:
        """A batch → ``EncoderOutput(tokens, padding_mask, pooled)``."""

    def take_final_norm(self) -> nn.Module | None:
        """Remove the norm after the last layer — ``tokens`` and ``pooled`` then come before it, and the config
        records that — and return it (``None``: the encoder has none). For a classifier head that normalises the mean
        of the tokens itself (``finetune.head_norm``: VideoMAE's fine-tuning head; docs/architecture.md, "Export").
        A family whose config has no such switch refuses (this default)."""
        raise ValueError(f"finetune.head_norm: the {self.modality} encoder ({self.architecture}) cannot give up the "
                         "norm after its last layer (its family does not offer the head norm): fine-tune without "
                         "--head-norm")

    def save_pretrained(self, folder: str | Path, *, processor: Processor | None = None,
                        pretraining: dict[str, Any] | None = None) -> Path:
        """``config.json``, ``model.safetensors`` and (with ``processor``) ``preprocessor.json``; the card is
        written by :mod:`zoo.cards`, the upload by :func:`zoo.push_to_hub`."""
        return hub.save_pretrained(self, folder, processor=processor, pretraining=pretraining)

    @classmethod
    def from_pretrained(cls, id_or_path: str | Path, **hub_kwargs: Any) -> Encoder:
        """Load a zoo folder or Hub repo of this class's architecture (another is refused: use
        ``zoo.AutoEncoder``, the factory, to load any)."""
        config = hub.load_config(id_or_path, **hub_kwargs)
        if (config["modality"], config["architecture"]) != (cls.modality, cls.architecture):
            raise hub.FormatError(
                f"{id_or_path} holds a {config['modality']}/{config['architecture']} model, not "
                f"{cls.modality}/{cls.architecture}: load it with zoo.AutoEncoder")
        return hub.build_encoder(cls, config, id_or_path, **hub_kwargs)


class Pretrainer(nn.Module, metaclass=ABCMeta):
    """The encoder plus its self-supervised heads. ``forward(batch, generator) → PretrainOutput``.
    ``collapse_rules``: the family's collapse signals (:mod:`zoo.collapse`, keys of the step's metrics) and
    when they mean a collapsed run; the engine's collapse alarm reads them."""

    collapse_rules: ClassVar[tuple[CollapseRule, ...]] = ()

    def __init__(self, encoder: Encoder, config: Config, total_steps: int = 1) -> None:
        super().__init__()
        self.encoder, self.config, self.total_steps = encoder, config, total_steps

    @abstractmethod
    def forward(self, batch: dict[str, Tensor], generator: torch.Generator) -> PretrainOutput:
        """Loss and metrics of one batch; every mask is drawn from ``generator``."""

    def on_step(self, step: int) -> dict[str, float]:
        """Called after every optimiser step (EMA updates, temperature schedules); returns metrics."""
        return {}


@dataclass
class Architecture:
    """One encoder family: its config, encoder, pretrainer and pretraining config classes."""

    name: str
    config: type[Config]
    encoder: type[Encoder]
    pretrainer: type[Pretrainer]
    pretraining: type[Config]


class _ReadKeys(dict):
    """A data spec that remembers which keys its source read (passing the whole spec on counts as reading
    every key), so that a key no source reads is an error rather than silently ignored."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return super().__contains__(key)

    def _all(self) -> None:
        self.read.update(super().keys())

    def __iter__(self):  # type: ignore[no-untyped-def]
        self._all()
        return super().__iter__()

    def keys(self):  # type: ignore[no-untyped-def]
        self._all()
        return super().keys()

    def items(self):  # type: ignore[no-untyped-def]
        self._all()
        return super().items()

    def values(self):  # type: ignore[no-untyped-def]
        self._all()
        return super().values()

    def copy(self) -> dict[str, Any]:
        self._all()
        return dict(super().items())


#: The one data vocabulary (docs/architecture.md, "Data"): names some sources once used, refused with today's.
RENAMED_KEYS = {"data_dir": "path", "label": "label_column", "entity": "entity_column"}
RENAMED_SOURCES = {"audiofolder": "folder", "videofolder": "folder", "file": "table",
                   "datasets": "hf"}


def source_loader(modality: str, sources: dict[str, Callable[[dict[str, Any]], ExampleSet | StreamSet]],
                  default: str, *, hf_input: str | None = None,
                  hf_prepare: Callable[[Any, dict[str, Any]], Any] | None = None
                  ) -> Callable[[dict[str, Any]], ExampleSet | StreamSet]:
    """A ``load_data`` that dispatches a recipe's data spec on its ``source`` key (``default`` when absent).
    Every modality also gets ``source: hf`` (:func:`zoo.data.hf_source`) with its default input column. Every
    source uses the same key names (``path``, ``label_column``, ``entity_column``, ``split``); an old name
    (``data_dir``, ``label``, ``entity``; ``audiofolder``, ``file``, ...) is refused naming the new one."""
    sources = {**sources, "hf": lambda spec: hf_source(spec, input_column=hf_input, prepare=hf_prepare)}

    def load_data(spec: dict[str, Any]) -> ExampleSet | StreamSet:
        spec = expand(dict(spec))                    # $ZOO_DATA/…, $ZOO_CACHE/…, ~/… as recorded by portable()
        source = spec.get("source", default)
        if source not in sources:
            hint = f"; {source!r} is now {RENAMED_SOURCES[source]!r}" if RENAMED_SOURCES.get(source) in sources \
                else ""
            raise ValueError(f"unknown {modality} data source {source!r}{hint}; known: {sorted(sources)}")
        old = sorted(k for k in spec if k in RENAMED_KEYS and not (source == "hf" and k == "data_dir"))
        if old:
            raise ValueError(f"{modality} data source {source!r}: the key(s) {old} are now called "
                             f"{[RENAMED_KEYS[k] for k in old]} (one vocabulary for every modality)")
        tracked = _ReadKeys(spec)
        data = sources[source](tracked)
        unread = sorted(set(spec) - tracked.read - {"source"})
        if unread:
            raise ValueError(f"{modality} data source {source!r} does not take the key(s) {unread} "
                             f"(it read {sorted(tracked.read - {'source'}) or 'none'}): a misspelling?")
        return data
    load_data.__doc__ = f"Load {modality} data from one of the sources {sorted(sources)} (default {default!r})."
    return load_data


@dataclass
class Protocol:
    """An evaluation protocol other than the example-level probes: ``fn(encoder, processor, spec) → metrics``;
    ``task`` is the Hugging Face task id the card records (e.g. ``node-classification``), ``metric`` the metric
    the results table reports, ``hidden`` metrics left out of the card; ``baselines`` name hand-made features
    scored by the same protocol, ``fn(processor, spec) → metrics`` with the same keys (docs/architecture.md,
    "Baselines"); ``examples(spec) → (train, test)`` gives the protocol's labelled examples as two
    :class:`ExampleSet` s, for what probes any encoder the same way (the online k-NN probe, label-efficiency
    curves; docs/architecture.md, "Online quality")."""

    fn: Callable[..., dict[str, float]]
    task: str
    metric: str = "accuracy"
    hidden: tuple[str, ...] = ()
    baselines: dict[str, Callable[..., dict[str, float]]] = field(default_factory=dict)
    examples: Callable[[dict[str, Any]], tuple[ExampleSet, ExampleSet]] | None = None


@dataclass
class SampleData:
    """A tiny labelled set of a modality's own kind, written to disk by ``Modality.sample_data(root)``: what the
    conformance suite pretrains on (``zoo pretrain recipe --data data``), fine-tunes on (``zoo finetune --data``)
    and predicts (``zoo predict`` on ``predict_inputs``, expecting ``predict_names`` in its output). Its classes
    are ones a linear model tells apart, so a working pipeline scores well above chance."""

    data: Path                                   # a folder of class folders, a table file, ...
    recipe: str                                  # the recipe the suite pretrains with
    num_classes: int
    predict_inputs: list[Path]                   # files ``zoo predict`` gets
    predict_names: list[str]                     # names it must print (a file path, an entity id)
    label_column: str | None = None              # tables and event logs
    pretrain_overrides: list[str] = field(default_factory=list)   # --set values that keep it small and fast
    finetune_args: list[str] = field(default_factory=list)        # extra ``zoo finetune`` flags (e.g. --lr)
    predict_all: list[Path] | None = None        # inputs holding every example (default: ``[data]``)


@dataclass
class Modality:
    """What a plugin registers under the ``zoo.modalities`` entry-point group.

    ``load_data(spec)`` turns a recipe's data section into an :class:`ExampleSet`; ``recipes`` is a folder
    of recipe YAML files; ``usage_example`` is Python that defines ``example``, one raw input, for cards;
    ``converters`` map a foreign checkpoint type (its ``model_type``) to ``fn(source, output_folder)``;
    ``exporters`` map a ``zoo export --format`` other than onnx (e.g. ``transformers``) to ``fn(model, output_folder)``;
    ``baselines`` name hand-crafted feature functions (``fn(raw examples, processor) → [N, F]``, or ``None`` where
    a function does not apply to the examples given; one entry may dispatch on the kind of example) the probes compare;
    ``evaluators`` are :class:`Protocol` s other than example-level probes, chosen by a recipe's
    ``evaluate.protocol``; ``task`` is the Hugging Face task id of the example-level probes; ``sample_data(root)``
    writes a tiny labelled set of the modality's own kind (:class:`SampleData`) for the conformance suite.

    The name is stated here once: the processor class and every architecture's encoder class get their
    ``modality`` (and ``architecture``) from this object.
    """

    name: str
    description: str
    processor: type[Processor]
    architectures: dict[str, Architecture]
    load_data: Callable[[dict[str, Any]], ExampleSet]
    recipes: Path | None = None
    usage_example: str = ""
    converters: dict[str, Callable[[str, str], Any]] = field(default_factory=dict)
    exporters: dict[str, Callable[[Any, Any], Any]] = field(default_factory=dict)
    baselines: dict[str, Callable[[Sequence[Any]], Tensor]] = field(default_factory=dict)
    evaluators: dict[str, Protocol] = field(default_factory=dict)
    task: str = "feature-extraction"
    folder_source: str | None = None         # the source that reads ``--data FOLDER`` (e.g. "folder")
    table_source: str | None = None          # the source that reads ``--data TABLE_FILE`` (e.g. "table")
    sample_data: Callable[[Path], SampleData] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.processor.modality = self.name
        for key, arch in self.architectures.items():
            if key != arch.name:
                raise ValueError(f"modality {self.name!r}: architecture listed as {key!r} is named {arch.name!r}")
            arch.encoder.modality, arch.encoder.architecture = self.name, arch.name

    def architecture(self, name: str) -> Architecture:
        if name not in self.architectures:
            raise KeyError(f"modality {self.name!r} has no architecture {name!r}; "
                           f"it has {sorted(self.architectures)}")
        return self.architectures[name]
