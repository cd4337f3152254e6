"""The on-disk / Hub format (docs/architecture.md, "On-disk format"): one folder = one Hub repo; safetensors
only, strict loading.

Folder and Hub I/O only: which class a config names is decided in :mod:`zoo.auto` (the factory), and what must
hold before a folder is published in :mod:`zoo.publish`. Nothing here imports another ``zoo`` module: encoders and
processors are taken as they are (any module with ``config``, ``modality``, ``architecture``; any object with
``to_dict``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

__all__ = [
    "check_dtypes", "require_floating", "ZOO_FORMAT", "CONFIG_NAME", "WEIGHTS_NAME", "PREPROCESSOR_NAME",
    "CARD_NAME", "REPO_FILES", "repo_files",
    "FormatError", "resolve_file", "load_config", "load_weights", "build_encoder", "load_processor_dict",
    "save_pretrained", "save_weights", "save_processor", "push_to_hub", "publish_to_cache", "check_repo_id",
]

ZOO_FORMAT = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
PREPROCESSOR_NAME = "preprocessor.json"
CARD_NAME = "README.md"
REPO_FILES = (CONFIG_NAME, WEIGHTS_NAME, PREPROCESSOR_NAME, CARD_NAME, "head.safetensors", "classifier.json",
              "confusion_matrix.png", "predicted_vs_true.png",    # these four: a fine-tuned classifier or regressor
              "quality_curve.png", "label_efficiency.png",        # the card's online-quality and label curves
              "similarity.png")                                   # a bound model's held-out similarity matrix


def repo_files(folder: str | Path) -> list[str]:
    """The files of a zoo folder that make its Hub repo (relative names): :data:`REPO_FILES` present, and for a bound
    model (``config.json``'s ``modality: bound``) each side's subfolder's, as ``<side>/<name>``."""
    folder = Path(folder)
    names = [n for n in REPO_FILES if (folder / n).is_file()]
    config = folder / CONFIG_NAME
    if config.is_file():
        try:
            loaded = json.loads(config.read_text())
        except (ValueError, UnicodeDecodeError):
            return names
        if isinstance(loaded, dict) and loaded.get("modality") == "bound" and isinstance(loaded.get("sides"), dict):
            for side in loaded["sides"]:
                if isinstance(side, str) and side and "/" not in side and not side.startswith("."):
                    names += [f"{side}/{n}" for n in REPO_FILES if (folder / side / n).is_file()]
    return names
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


class FormatError(ValueError):
    """A folder or repo that is not a valid zoo model."""


def _is_local(id_or_path: str | Path) -> bool:
    return Path(id_or_path).is_dir()


def pickles_in(id_or_path: str | Path, hub_kwargs: dict[str, Any]) -> list[str]:
    if _is_local(id_or_path):
        names = [p.name for p in Path(id_or_path).iterdir()]
    else:
        if hub_kwargs.get("local_files_only"):
            return []
        try:
            from huggingface_hub import list_repo_files
            names = list_repo_files(str(id_or_path), revision=hub_kwargs.get("revision"),
                                    token=hub_kwargs.get("token"))
        except Exception:
            return []
    return sorted(n for n in names if n.endswith(PICKLE_SUFFIXES))


def resolve_file(id_or_path: str | Path, filename: str, *, revision: str | None = None,
                 cache_dir: str | Path | None = None, local_files_only: bool = False,
                 token: str | bool | None = None, required: bool = True) -> Path | None:
    """Path of ``filename`` in a local folder or a Hub repo (through the ``huggingface_hub`` cache)."""
    if _is_local(id_or_path):
        path = Path(id_or_path) / filename
        if path.is_file():
            return path
        if required:
            raise FileNotFoundError(f"{filename} not found in the folder {id_or_path}")
        return None
    text = str(id_or_path)
    if text.startswith(("/", ".", "~")) or text.count("/") > 1 or os.path.exists(text):
        raise FileNotFoundError(f"{text} is not a model folder (and not a Hub id of the form org/name)")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )
    try:
        return Path(hf_hub_download(str(id_or_path), filename, revision=revision, cache_dir=cache_dir,
                                    local_files_only=local_files_only, token=token))
    except (RepositoryNotFoundError, HFValidationError) as err:
        raise FileNotFoundError(f"{text}: no such model folder or Hub repo ({type(err).__name__})") from None
    except (EntryNotFoundError, LocalEntryNotFoundError) as err:
        if required:
            raise FileNotFoundError(f"{filename} not found in the Hub repo {id_or_path}"
                                    f"{' at ' + revision if revision else ''}: {err}") from None
        return None


def read_json(path: str | Path) -> dict[str, Any]:
    """A JSON object from ``path``; anything else (binary, invalid JSON, a list) is a FormatError naming it."""
    try:
        value = json.loads(Path(path).read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise FormatError(f"{path}: not a text file (expected JSON)") from None
    except json.JSONDecodeError as err:
        raise FormatError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise FormatError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def load_config(id_or_path: str | Path, **hub_kwargs: Any) -> dict[str, Any]:
    path = resolve_file(id_or_path, CONFIG_NAME, **hub_kwargs)
    config = read_json(path)
    for key in ("zoo_format", "modality", "architecture", "encoder"):
        if key not in config:
            raise FormatError(f"{path}: missing key {key!r} (a zoo config has zoo_format, modality, "
                              "architecture, encoder, pretraining)")
    fmt = config["zoo_format"]
    if type(fmt) is not int:
        raise FormatError(f"{path}: zoo_format must be the number {ZOO_FORMAT}, got {fmt!r} ({type(fmt).__name__})")
    if fmt != ZOO_FORMAT:
        raise FormatError(f"{path}: zoo_format {fmt} is not supported (this is {ZOO_FORMAT})")
    for key in ("modality", "architecture"):
        if not isinstance(config[key], str) or not config[key]:
            raise FormatError(f"{path}: {key} must be a name (a string), got {config[key]!r}")
    for key in ("encoder", "pretraining"):
        if key in config and not isinstance(config[key], dict):
            raise FormatError(f"{path}: {key} must be a mapping of settings, got {config[key]!r}")
    return config


def _is_safetensors(path: Path) -> bool:
    """A safetensors file starts with its JSON header's length (little-endian u64), then the header: decided by
    parsing that header, never by sniffing one byte (a header length of 128 mod 256 starts with 0x80, as pickles do)."""
    import struct
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return False
        (n,) = struct.unpack("<Q", head)
        if n < 2 or n > min(size - 8, 100 * 2 ** 20):
            return False
        try:
            header = json.loads(fh.read(n))
        except ValueError:
            return False
    return isinstance(header, dict)


def check_finite(state: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """``state`` when every floating-point tensor is finite, else a :class:`FormatError` naming ``where`` (the
    file) and the tensors holding NaN/inf (docs/reliability.md)."""
    bad = non_finite(state)
    if bad:
        raise FormatError(f"{where}: weights hold NaN/inf values in {bad[:5]}{' …' if len(bad) > 5 else ''} "
                          "(a diverged training run, or a damaged file?): refusing to load them")
    return state


def load_weights(path: str | Path, *, finite: bool = True) -> dict[str, torch.Tensor]:
    """Read a safetensors file; anything that looks like a pickle is refused, never unpickled; NaN/inf in a
    floating-point tensor is refused naming the file and the tensor (``finite``, docs/reliability.md)."""
    path = Path(path)
    if not _is_safetensors(path):
        with open(path, "rb") as fh:
            head = fh.read(2)
        if head[:2] != b"PK" and head[:1] != b"\x80":
            raise FormatError(f"{path} is not a valid safetensors file (its header does not parse)")
        raise FormatError(f"{path} is a pickle/zip checkpoint, not safetensors: refusing to unpickle it "
                          "(convert it with safetensors in a trusted environment)")
    try:
        state = load_file(str(path))
    except Exception as err:
        raise FormatError(f"{path} is not a valid safetensors file: {err}") from None
    return check_finite(state, str(path)) if finite else state


def foreign_checkpoint(source: str | Path, model_type: str) -> tuple[dict, Path]:
    """The ``config.json`` and ``model.safetensors`` of a Hugging Face transformers folder holding a ``model_type``
    model (for importers); pickled weights beside them are named and refused, never loaded."""
    source = Path(source)
    hf = read_json(source / "config.json")
    if hf.get("model_type") != model_type:
        raise FormatError(f"{source} holds a {hf.get('model_type')!r} model, not {model_type}")
    weights = source / "model.safetensors"
    if not weights.is_file():
        pickles = pickles_in(source, {})
        raise FileNotFoundError(f"{weights} not found" + (f"; {pickles} are pickles and are never loaded: "
                                                          "re-save the model with safetensors" if pickles else ""))
    return hf, weights


def foreign_numbers(hf: dict[str, Any], where: str, required: tuple[str, ...] = (),
                    optional: tuple[str, ...] = ()) -> None:
    """The sizes a foreign (transformers) ``config.json`` must state as whole numbers >= 1 (a list of them for
    per-layer sizes): a missing ``required`` key or ``"hidden_size": "32"`` is a :class:`FormatError` naming
    ``where`` and the key, before anything is built (docs/reliability.md)."""
    for key in (*required, *optional):
        if key not in hf or hf[key] is None:
            if key in required:
                raise FormatError(f"{where}: no {key!r} (a transformers config of this model states it)")
            continue
        value = hf[key]
        items = value if isinstance(value, list) and value else [value]
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in items):
            raise FormatError(f"{where}: {key!r} is {value!r}: expected a whole number >= 1"
                              + (" (a list of them)" if isinstance(value, list) else "")
                              + (" (a number, not a string)" if any(isinstance(v, str) for v in items) else ""))


def load_state_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise FormatError(f"{where}: weights do not match the architecture: missing keys {missing[:10]}"
                          f"{' …' if len(missing) > 10 else ''}, unexpected keys {unexpected[:10]}"
                          f"{' …' if len(unexpected) > 10 else ''}")
    bad = [k for k in own if own[k].shape != state[k].shape]
    if bad:
        raise FormatError(f"{where}: shape mismatch for {bad[:10]}: "
                          + ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in bad[:3]))
    check_dtypes(own, state, where)
    module.load_state_dict(state, strict=True)


def require_floating(state: dict[str, torch.Tensor], where: str) -> None:
    """A foreign checkpoint whose every tensor is a floating-point weight (wav2vec 2.0, VideoMAE): an integer or
    bool tensor is refused naming it and ``where`` (a converter fuses q/k/v with ``torch.cat``, which would cast it
    silently; docs/reliability.md)."""
    bad = sorted(k for k, v in state.items() if not v.is_floating_point())
    if bad:
        raise FormatError(f"{where}: " + ", ".join(f"{k} is {str(state[k].dtype).removeprefix('torch.')}"
                                                  for k in bad[:5]) + (" …" if len(bad) > 5 else "")
                          + " where a floating-point weight belongs: refusing to cast it (re-export the checkpoint "
                          "with floating-point weights)")


def check_dtypes(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], where: str) -> None:
    """A saved tensor is floating exactly where the model's is (float16/bfloat16 → float32 is a cast; an int32 or
    bool tensor where a float parameter belongs, or the reverse, is refused naming the tensors and ``where``, the
    file: docs/reliability.md)."""
    bad = sorted(k for k in set(own) & set(state)
                 if own[k].is_floating_point() != state[k].is_floating_point()
                 or own[k].is_complex() != state[k].is_complex())
    if bad:
        raise FormatError(f"{where}: tensors of another kind of dtype than the model's: "
                          + ", ".join(f"{k} is {str(state[k].dtype).removeprefix('torch.')} where "
                                      f"{str(own[k].dtype).removeprefix('torch.')} belongs" for k in bad[:5])
                          + (" …" if len(bad) > 5 else "") + ": refusing to cast them (re-export the checkpoint "
                          "with floating-point weights)")


def build_encoder(cls: type[torch.nn.Module], config: dict[str, Any], id_or_path: str | Path,
                  **hub_kwargs: Any) -> Any:
    """Build ``cls`` from a loaded ``config.json`` and load the folder/repo's weights strictly."""
    weights = resolve_file(id_or_path, WEIGHTS_NAME, required=False, **hub_kwargs)
    if weights is None:
        pickles = pickles_in(id_or_path, hub_kwargs)
        found = f"; found pickle checkpoint(s) {pickles}, which are never loaded" if pickles else ""
        raise FileNotFoundError(f"{WEIGHTS_NAME} not found in {id_or_path}{found}")
    enc_config = cls.config_class.from_dict(config["encoder"], where=f"{id_or_path}:config.json:encoder")
    check_shapes(cls, enc_config, weights, str(id_or_path))
    try:
        encoder = cls(enc_config)
    except (RuntimeError, ValueError, TypeError, ZeroDivisionError) as err:
        raise FormatError(f"{id_or_path}: config.json's encoder settings do not build a {cls.__name__}: "
                          f"{str(err).splitlines()[0][:200]}") from None
    state = load_weights(weights)
    load_state_strict(encoder, state, str(id_or_path))
    return encoder.eval()


def check_shapes(cls: type[torch.nn.Module], config: Any, weights: Path, where: str) -> None:
    """Compare the tensor shapes ``config`` implies (the model built on the ``meta`` device: no memory) with
    the shapes in the weights file's header, before anything is allocated: a ``config.json`` asking for
    ``in_dim: 10**9`` is refused here instead of allocating terabytes."""
    if not _is_safetensors(weights):
        return                                      # load_weights names the problem
    try:
        with torch.device("meta"):
            probe = cls(config)
    except Exception:                               # a class that cannot be built on meta: checked at load
        return
    from safetensors import safe_open
    try:
        with safe_open(str(weights), framework="pt") as fh:
            stored = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    except Exception as err:                        # a cut or damaged file: name it
        raise FormatError(f"{weights} is not a valid safetensors file: {str(err).splitlines()[0][:200]}") from None
    wanted = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
    differ = [f"{k}: config {wanted[k]} vs weights {stored[k]}" for k in wanted if k in stored
              and wanted[k] != stored[k]]
    if differ:
        raise FormatError(f"{where}: config.json does not match model.safetensors ({len(differ)} tensor(s) differ: "
                          f"{'; '.join(differ[:3])}{' …' if len(differ) > 3 else ''})")


def non_finite(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of ``state`` that hold NaN or inf values."""
    return sorted(k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all()))


def load_processor_dict(id_or_path: str | Path, **hub_kwargs: Any) -> dict[str, Any]:
    return read_json(resolve_file(id_or_path, PREPROCESSOR_NAME, **hub_kwargs))


def save_weights(tensors: dict[str, Any], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """``tensors`` as a safetensors file whose bytes depend on the tensors and ``metadata`` alone: safetensors writes
    the metadata in hash-map order, which differs from process to process, so the same weights saved twice gave two
    files (and two SHA-256, which the card's fingerprint and the Hub's deduplication read). The header is re-written
    with its keys sorted, same length, same offsets."""
    from safetensors.torch import save
    data = bytearray(save(tensors, metadata=metadata))
    n = int.from_bytes(data[:8], "little")
    text = json.dumps(json.loads(bytes(data[8:8 + n])), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode()
    if len(text) > n:                           # cannot happen: the same JSON, only reordered
        raise RuntimeError(f"{path}: the sorted safetensors header is longer than the written one")
    data[8:8 + n] = text + b" " * (n - len(text))
    Path(path).write_bytes(bytes(data))


def save_pretrained(encoder: Any, folder: str | Path, *, processor: Any | None = None,
                    pretraining: dict[str, Any] | None = None) -> Path:
    """Write config.json, model.safetensors and preprocessor.json (the card is written by zoo.cards)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"zoo_format": ZOO_FORMAT, "modality": encoder.modality, "architecture": encoder.architecture,
              "encoder": encoder.config.to_dict(), "pretraining": pretraining or {}}
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    save_weights(state, folder / WEIGHTS_NAME, metadata={"format": "pt", "zoo_format": str(ZOO_FORMAT)})
    if processor is not None:
        save_processor(processor, folder)
    return folder


def save_processor(processor: Any, folder: str | Path) -> Path:
    """``preprocessor.json``: what ``processor.to_dict()`` holds."""
    path = Path(folder) / PREPROCESSOR_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(processor.to_dict(), indent=2) + "\n")
    return path


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` as the Hub accepts it (``name`` or ``namespace/name``), else a ValueError saying why:
    never an empty id or a path such as ``../../x``."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"invalid repo id {repo_id!r}: {str(err).splitlines()[0]}") from None
    return repo_id


def publish_to_cache(folder: str | Path, repo_id: str, cache_dir: str | Path) -> str:
    """Lay a zoo folder out as a ``huggingface_hub`` cache entry (``models--org--name/{blobs,refs/main,
    snapshots/<sha>}``) so that the Hub id resolves offline: a local folder acting as the Hub.
    Returns the revision hash (of the repo files' contents)."""
    import hashlib
    check_repo_id(repo_id)
    folder = Path(folder)
    names = repo_files(folder)
    if WEIGHTS_NAME not in names:
        raise FileNotFoundError(f"{folder} lacks {WEIGHTS_NAME}: not a zoo model folder")
    digest = hashlib.sha1()
    for name in names:
        digest.update(name.encode() + hashlib.sha256((folder / name).read_bytes()).digest())
    sha = digest.hexdigest()
    root = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    snap = root / "snapshots" / sha
    for sub in (root / "blobs", root / "refs", snap):
        sub.mkdir(parents=True, exist_ok=True)
    for name in names:
        data = (folder / name).read_bytes()
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        if not blob.exists():
            blob.write_bytes(data)
        link = snap / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    (root / "refs" / "main").write_text(sha)
    return sha


def push_to_hub(folder: str | Path, repo_id: str, *, token: str | None = None, private: bool | None = None,
                revision: str | None = None, commit_message: str = "Upload ssl-zoo model",
                create_pr: bool = False, endpoint: str | None = None) -> Any:
    """Upload exactly the repo files of a zoo folder (config, weights, preprocessor, card)."""
    from huggingface_hub import HfApi
    check_repo_id(repo_id)
    folder = Path(folder)
    present = repo_files(folder)
    missing = sorted(set(REPO_FILES[:2]) - set(present))
    if missing:
        raise FileNotFoundError(f"{folder} lacks {missing}: not a zoo model folder")
    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        return api.upload_folder(folder_path=str(folder), repo_id=repo_id, allow_patterns=present,
                                 revision=revision, commit_message=commit_message, create_pr=create_pr)
    except Exception as err:                  # noqa: BLE001 - said once, with no token in it (docs/reliability.md)
        raise _hub_error(err, api, repo_id, token) from None


def _hub_error(err: Exception, api: Any, repo_id: str, token: str | None) -> Exception:
    """A failed upload as one message: the Hub unreachable (no network, a wrong ``HF_ENDPOINT``), or what the
    Hub answered; a token never appears in it."""
    from huggingface_hub import get_token
    secrets = [t for t in (token, get_token()) if t]
    names = {c.__name__ for c in type(err).__mro__}
    if names & {"ConnectError", "ConnectTimeout", "TransportError", "ConnectionError", "Timeout", "OSError"} and \
            "HfHubHTTPError" not in names:
        said = f"the Hub ({api.endpoint}) could not be reached ({type(err).__name__}): check the network or " \
               "HF_ENDPOINT, then run zoo publish again; nothing was uploaded"
    else:
        said = f"the Hub ({api.endpoint}) refused the upload ({type(err).__name__}: " \
               f"{(str(err).splitlines() or [''])[0][:300]})"
    for secret in secrets:
        said = said.replace(secret, "***")
    return RuntimeError(f"publish {repo_id}: {said}")
