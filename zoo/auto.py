"""``AutoEncoder`` / ``AutoProcessor``: load any zoo model by dispatching on its config — the factory (timm's
``_factory``: it resolves, :mod:`zoo.hub` reads and writes).

A Hugging Face transformers checkpoint (a folder or a Hub id whose ``config.json`` names a ``model_type``) of a family
an installed modality converts is converted once into the zoo format in ``$ZOO_CACHE/converted/`` (safetensors only:
pickled weights are refused, never loaded) and loaded from there like any zoo entry."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

from .hub import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    FormatError,
    build_encoder,
    load_config,
    load_processor_dict,
    pickles_in,
    read_json,
    resolve_file,
)
from .paths import cache_dir, portable
from .plugin import Encoder, Processor
from .registry import get_modality, installed

__all__ = ["AutoEncoder", "AutoProcessor", "load_encoder", "load_bound", "side_folder", "converted_folder",
           "remove_orphans", "converters",
           "zoo_source", "NON_COMMERCIAL"]

logger = logging.getLogger(__name__)
#: families whose released weights are not for commercial use: a warning at every load
NON_COMMERCIAL = {"videomae": "VideoMAE's released weights are licensed CC BY-NC 4.0 (non-commercial use only)"}
FOREIGN_FILES = ("preprocessor_config.json",)


def converters() -> dict[str, tuple[str, Any]]:
    """Every installed modality's importers: ``model_type`` (or checkpoint family) → (modality, function)."""
    found = {}
    for name in installed():
        try:
            for kind, fn in get_modality(name).converters.items():
                found.setdefault(kind, (name, fn))
        except Exception:  # a broken plugin must not hide the others
            continue
    return found


def zoo_source(id_or_path: str | Path, hub_kwargs: dict[str, Any]) -> tuple[str | Path, dict[str, Any]]:
    """Where to load a zoo model from: ``id_or_path`` itself when it holds one, else the converted folder of the
    transformers checkpoint it names (local: no Hub arguments)."""
    folder = converted_folder(id_or_path, **hub_kwargs)
    return (id_or_path, hub_kwargs) if folder is None else (folder, {})


def converted_folder(id_or_path: str | Path, **hub_kwargs: Any) -> Path | None:
    """The zoo folder a transformers checkpoint (``config.json`` with a ``model_type``) is converted into, once, in
    the cache (keyed by the checkpoint's config and weights: a new revision converts anew); ``None`` for a zoo
    folder or repo."""
    config_path = resolve_file(id_or_path, CONFIG_NAME, **hub_kwargs)
    config = read_json(config_path)
    if "zoo_format" in config or "model_type" not in config:
        return None
    kind = config["model_type"]
    known = converters()
    if kind not in known:
        raise FormatError(f"{id_or_path}: a transformers {kind!r} checkpoint; the families ssl-zoo reads are "
                          f"{sorted(known)}")
    weights = resolve_file(id_or_path, WEIGHTS_NAME, required=False, **hub_kwargs)
    if weights is None:
        pickles = sorted(set(pickles_in(config_path.parent, {})) | set(pickles_in(id_or_path, hub_kwargs)))
        raise FileNotFoundError(f"{id_or_path}: no {WEIGHTS_NAME}" + (f"; {pickles} are pickle checkpoints and are "
                                                                        "never loaded" if pickles else ""))
    for name in FOREIGN_FILES:                    # beside config.json in the same snapshot folder
        resolve_file(id_or_path, name, required=False, **hub_kwargs)
    if kind in NON_COMMERCIAL:
        warnings.warn(f"{id_or_path}: {NON_COMMERCIAL[kind]}", UserWarning, stacklevel=3)
    stat = Path(weights).stat()
    key = hashlib.sha256(config_path.read_bytes() + f"{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    safe = "".join(c if c.isalnum() or c in "-_." else "--" for c in Path(str(id_or_path)).name or "model")
    target = cache_dir() / "converted" / f"{safe}-{key}"
    if not (target / CONFIG_NAME).is_file():
        modality, convert = known[kind]
        remove_orphans(target.parent)
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        convert(str(config_path.parent), str(tmp))
        _record_origin(tmp, id_or_path)
        _name_card(tmp, id_or_path)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)                    # atomic: a killed conversion leaves no half folder
        logger.info("converted %s (%s) into %s [%s]", id_or_path, kind, target, modality)
    return target


def remove_orphans(folder: Path) -> list[Path]:
    """Remove the ``*.tmp<pid>`` folders of conversions whose process is gone (killed mid-way: they would stay in
    the cache for good), each named in the log; a live process's (or another user's) is left alone
    (docs/reliability.md). Returns the folders removed."""
    removed = []
    for path in sorted(folder.glob("*.tmp*")) if folder.is_dir() else []:
        pid = path.name.rsplit(".tmp", 1)[1]
        if not path.is_dir() or not pid.isdigit() or int(pid) == os.getpid() or not _gone(int(pid)):
            continue
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        shutil.rmtree(path, ignore_errors=True)
        logger.info("removed %s (%.1f MB): the leftover of a conversion whose process (%s) is gone", path,
                    size / 1e6, pid)
        removed.append(path)
    return removed


def _gone(pid: int) -> bool:
    """Whether no process ``pid`` runs (``os.kill(pid, 0)``: a live one of another user answers PermissionError)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return True
    except PermissionError:
        return False
    return False


def _record_origin(folder: Path, id_or_path: str | Path) -> None:
    """``config.json`` records what the folder was converted from: a Hub id as it is, a local folder portably."""
    path = folder / CONFIG_NAME
    config = json.loads(path.read_text())
    local = Path(str(id_or_path)).is_dir()
    config.setdefault("pretraining", {})["converted_from"] = portable(str(Path(id_or_path).resolve())) if local \
        else str(id_or_path)
    path.write_text(json.dumps(config, indent=2) + "\n")


def _name_card(folder: Path, id_or_path: str | Path) -> None:
    """The converter rendered the card in a temporary folder, named after it: name it after what it was converted
    from (a Hub id as it is — loading it converts the same way —, a local folder by its name)."""
    card = folder / "README.md"
    if card.is_file():
        local = Path(str(id_or_path)).is_dir()
        name = Path(str(id_or_path)).resolve().name if local else str(id_or_path)
        card.write_text(card.read_text().replace(folder.name, name))


def bound_folder(id_or_path: str | Path, hub_kwargs: dict[str, Any]) -> Path:
    """A bound model's folder on this machine: a local folder as it is, a Hub repo's snapshot (its sides are
    subfolders, each an ordinary zoo folder)."""
    if Path(id_or_path).is_dir():
        return Path(id_or_path)
    from huggingface_hub import snapshot_download
    return Path(snapshot_download(str(id_or_path), **{k: v for k, v in hub_kwargs.items() if v is not None}))


def side_folder(id_or_path: str | Path, modality: str, hub_kwargs: dict[str, Any]) -> Path:
    """The folder of one side of a bound model (``<folder>/<modality>``), refused naming the sides it has."""
    folder = bound_folder(id_or_path, hub_kwargs)
    sides = list(load_config(folder).get("sides", {}))
    if modality not in sides:
        raise ValueError(f"{id_or_path} binds {sides}: it has no {modality!r} side")
    return folder / modality


def load_bound(id_or_path: str | Path, **hub_kwargs: Any) -> Any:
    """A bound model (:class:`zoo.bound.BoundModel`): each side's encoder and processor from its subfolder, the
    projections and temperature from ``model.safetensors``."""
    from .bound import BindConfig, BoundModel
    from .hub import load_weights
    folder = bound_folder(id_or_path, hub_kwargs)
    config = load_config(folder)
    bind = BindConfig.from_dict(config["encoder"], where=f"{id_or_path}:config.json:encoder")
    missing = [m for m in bind.sides if not (folder / m / CONFIG_NAME).is_file()]
    if missing or set(config.get("sides", {})) != set(bind.sides):
        raise FormatError(f"{id_or_path}: a bound model needs a zoo folder per side {bind.sides}; missing {missing}")
    encoders = {m: load_encoder(folder / m) for m in bind.sides}
    processors = {m: AutoProcessor.from_pretrained(folder / m) for m in bind.sides}
    model = BoundModel(encoders, bind, processors)
    weights = resolve_file(folder, WEIGHTS_NAME)
    model.load_head(load_weights(weights), str(id_or_path))
    return model.eval()


def load_encoder(id_or_path: str | Path, *, expect: type[Encoder] | None = None, runtime: str | None = None,
                 modality: str | None = None, **hub_kwargs: Any) -> Encoder:
    """The class lookup (timm's ``_factory``): ``config.json`` names modality and architecture, the registry
    gives the class; with ``expect``, a config of another architecture is refused. An exported folder (``zoo
    export``: config.json has an ``export`` block) runs through ONNX Runtime (an exported program: through
    ``torch.export``) unless ``runtime="torch"`` asks for the weights beside it (docs/architecture.md, "Export").
    A bound model (``zoo bind``) loads whole (:class:`zoo.bound.BoundModel`), or with ``modality`` one side alone,
    an ordinary encoder."""
    from .bound import is_bound
    from .export import EXPORT_KEY
    from .onnx_runtime import RUNTIMES, load_onnx_encoder
    if runtime not in (None, *RUNTIMES):
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if expect is not None and expect is not Encoder:
        return expect.from_pretrained(id_or_path, **hub_kwargs)
    id_or_path, hub_kwargs = zoo_source(id_or_path, hub_kwargs)
    config = load_config(id_or_path, **hub_kwargs)
    if is_bound(config):
        if modality is not None:
            return load_encoder(side_folder(id_or_path, modality, hub_kwargs), runtime=runtime)
        return load_bound(id_or_path, **hub_kwargs)
    if modality is not None and modality != config["modality"]:
        raise ValueError(f"{id_or_path} is a {config['modality']} model, not a bound model with a {modality!r} side")
    if EXPORT_KEY in config and runtime != "torch":
        if isinstance(config[EXPORT_KEY], dict) and config[EXPORT_KEY].get("format") == "exported-program":
            if runtime == "onnx":
                raise ValueError(f"{id_or_path} is an exported torch program (model.pt2), not an ONNX graph: load "
                                 "it without runtime, or with runtime='torch' for the weights beside it")
            from .exported_program import load_program_encoder
            return load_program_encoder(id_or_path, config, **hub_kwargs)
        return load_onnx_encoder(id_or_path, config, **hub_kwargs)
    if runtime == "onnx":
        raise ValueError(f"{id_or_path} is not an exported model (zoo export MODEL OUT makes one): runtime='onnx' "
                         "needs its model.onnx")
    if EXPORT_KEY in config and isinstance(config[EXPORT_KEY], dict):      # the weights beside a graph: checked too
        from .onnx_runtime import check_exported_files
        check_exported_files(id_or_path, config[EXPORT_KEY], **hub_kwargs)
        if config[EXPORT_KEY].get("quantize"):
            logging.getLogger("zoo").info("%s: runtime='torch' runs the fp32 weights kept beside the %s graph, not "
                                          "the quantised graph", id_or_path, config[EXPORT_KEY]["quantize"])
    cls = get_modality(config["modality"]).architecture(config["architecture"]).encoder
    return build_encoder(cls, config, id_or_path, **hub_kwargs)


class AutoEncoder:
    """``AutoEncoder.from_pretrained(id_or_path)`` → the modality's encoder with its weights."""

    def __init__(self) -> None:
        raise TypeError("use AutoEncoder.from_pretrained(id_or_path)")

    @staticmethod
    def from_pretrained(id_or_path: str | Path, revision: str | None = None,
                        cache_dir: str | Path | None = None, local_files_only: bool = False,
                        token: str | bool | None = None, runtime: str | None = None,
                        modality: str | None = None) -> Encoder:
        """``runtime``: ``"onnx"`` or ``"torch"`` for an exported folder that has both (default: its graph).
        ``modality``: one side of a bound model (``zoo bind``); without it a bound model loads whole."""
        return load_encoder(id_or_path, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
                            token=token, runtime=runtime, modality=modality)


class AutoProcessor:
    """``AutoProcessor.from_pretrained(id_or_path)`` → the fitted processor saved with the model."""

    def __init__(self) -> None:
        raise TypeError("use AutoProcessor.from_pretrained(id_or_path)")

    @staticmethod
    def from_pretrained(id_or_path: str | Path, modality: str | None = None, **hub_kwargs: Any) -> Processor:
        """``modality``: the processor of one side of a bound model."""
        from .bound import is_bound
        id_or_path, hub_kwargs = zoo_source(id_or_path, hub_kwargs)
        config = load_config(id_or_path, **hub_kwargs)
        if is_bound(config):
            if modality is None:
                raise ValueError(f"{id_or_path} is a bound model of {list(config.get('sides', {}))}: name the side "
                                 "(AutoProcessor.from_pretrained(model, modality=...))")
            return AutoProcessor.from_pretrained(side_folder(id_or_path, modality, hub_kwargs))
        if modality is not None and modality != config["modality"]:
            raise ValueError(f"{id_or_path} is a {config['modality']} model, not a bound model with a {modality!r} "
                             "side")
        modality = get_modality(config["modality"])
        if "export" in config and isinstance(config["export"], dict):      # zoo.export.EXPORT_KEY
            from .onnx_runtime import check_exported_preprocessor
            check_exported_preprocessor(id_or_path, config["export"], **hub_kwargs)
        try:
            processor = modality.processor.from_dict(load_processor_dict(id_or_path, **hub_kwargs))
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            if isinstance(err, FormatError):
                raise
            raise FormatError(f"{id_or_path}: preprocessor.json does not load: {str(err).strip(chr(39))}") from None
        # what fit learned must be what the encoder was built for (else a raw shape error at the first batch)
        implied = json.loads(json.dumps(processor.encoder_config()))
        differ = {k: (v, config["encoder"].get(k)) for k, v in implied.items() if config["encoder"].get(k) != v}
        if differ:
            raise FormatError(f"{id_or_path}: preprocessor.json does not fit config.json: "
                              + "; ".join(f"{k} is {a!r} in the processor, {b!r} in the encoder"
                                          for k, (a, b) in differ.items()))
        return processor
