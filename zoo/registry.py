"""Find modality plugins through the ``zoo.modalities`` entry-point group (built-ins use it too)."""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .plugin import Modality

__all__ = ["GROUP", "UnknownModality", "installed", "get_modality", "register", "describe_installed",
           "ModalityInfo"]

GROUP = "zoo.modalities"

_registered: dict[str, Modality] = {}
_loaded: dict[str, Modality] = {}


class UnknownModality(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def installed() -> dict[str, str]:
    """Installed modality names → the package (distribution) that provides each."""
    out = {name: (ep.dist.name if ep.dist is not None else ep.value) for name, ep in _entry_points().items()}
    out.update({name: "registered in-process" for name in _registered})
    return dict(sorted(out.items()))


def _provider(ep: EntryPoint, name: str) -> str:
    """What to install for an entry point whose imports fail: its distribution, with the extra of the same
    name when the distribution declares one (``ssl-zoo[audio]``)."""
    if ep.dist is None:
        return f"the package providing {ep.value}"
    return _with_extra(ep.dist, name) or ep.dist.name


def _with_extra(dist, name: str) -> str | None:
    """``dist[name]`` when the distribution declares an extra called ``name``."""
    return f"{dist.metadata['Name']}[{name}]" if name in (dist.metadata.get_all("Provides-Extra") or []) else None


def _extras_named(name: str) -> list[str]:
    """``dist[name]`` for every installed plugin distribution that declares an extra called ``name``."""
    from importlib.metadata import distributions
    found = (_with_extra(d, name) for d in distributions() if any(ep.group == GROUP for ep in d.entry_points))
    return sorted({f for f in found if f})


def register(modality: Modality) -> None:
    """Register a modality in this process only (an entry point is the way to ship one)."""
    _registered[modality.name] = modality


def get_modality(name: str) -> Modality:
    """Load a modality by name; an unknown name lists the installed ones and says who provides it."""
    if name in _registered:
        return _registered[name]
    if name in _loaded:
        return _loaded[name]
    eps = _entry_points()
    if name not in eps:
        have = ", ".join(installed()) or "none"
        extras = _extras_named(name)
        hint = (f"It may be provided by {' or '.join(extras)}." if extras else
                f"Install a plugin package that registers '{name}' under the '{GROUP}' entry points.")
        raise UnknownModality(f"modality {name!r} is not installed (installed: {have}). {hint}")
    try:
        obj = eps[name].load()
    except ImportError as err:
        raise ImportError(f"modality {name!r} is installed but needs {err.name or err}: install "
                          f"{_provider(eps[name], name)}") from err
    from .plugin import Modality
    modality = obj() if callable(obj) and not isinstance(obj, Modality) else obj
    if not isinstance(modality, Modality) or modality.name != name:
        raise TypeError(f"entry point {eps[name].value} must give a zoo.Modality named {name!r}")
    _check_contract(modality, eps[name].value)
    _loaded[name] = modality
    return modality


def _check_contract(modality: Modality, where: str) -> None:
    """What the plugin contract (docs/adding-a-modality.md) asks of the classes, checked as the plugin is loaded:
    a ``zoo.Processor`` whose ``fit`` is declared to return the processor, encoders that are ``zoo.Encoder`` s."""
    import inspect

    from .plugin import Encoder, Processor
    if not (inspect.isclass(modality.processor) and issubclass(modality.processor, Processor)):
        raise TypeError(f"{where}: modality {modality.name!r}: processor must be a zoo.Processor subclass")
    ret = inspect.signature(modality.processor.fit).return_annotation
    if ret in (None, "None", type(None)):
        raise TypeError(f"{where}: modality {modality.name!r}: {modality.processor.__name__}.fit is declared to "
                        "return None; the contract asks it to return the fitted processor (`return self`)")
    for arch in modality.architectures.values():
        if not (inspect.isclass(arch.encoder) and issubclass(arch.encoder, Encoder)):
            raise TypeError(f"{where}: modality {modality.name!r}: architecture {arch.name!r}'s encoder must be a "
                            "zoo.Encoder subclass")


@dataclass
class ModalityInfo:
    """What ``zoo list`` shows of an installed modality, read without importing it."""

    name: str
    package: str
    description: str
    recipes: dict[str, Path]
    architectures: list[str]


def _yaml_files(folder: str | Path | None) -> dict[str, Path]:
    return {p.stem: p for p in sorted(Path(folder).glob("*.yaml"))} if folder is not None else {}


def _package_dir(ep: EntryPoint) -> Path | None:
    """The folder of the module an entry point names, found without executing it."""
    try:
        spec = importlib.util.find_spec(ep.module)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def _on_disk(name: str, eps: dict[str, EntryPoint]) -> Path | None:
    """The package folder of an entry-point modality that keeps its recipes in ``recipes/`` beside its module —
    what can be read without importing it (a modality registered in-process is the one in memory)."""
    folder = _package_dir(eps[name]) if name in eps and name not in _registered else None
    if folder is None or not (folder / "recipes").is_dir() or not (folder / "__init__.py").is_file():
        return None
    return folder


def _describe(name: str, package: str, eps: dict[str, EntryPoint], details: bool) -> ModalityInfo:
    folder = _on_disk(name, eps)
    if folder is not None:
        recipes = _yaml_files(folder / "recipes")
        if not details:
            return ModalityInfo(name, package, "", recipes, [])
        import yaml
        doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text())) or ""
        summary = " ".join(doc.strip().split("\n\n")[0].split())          # the docstring's first paragraph
        archs = sorted({str(arch) for p in recipes.values()
                        if (arch := (yaml.safe_load(p.read_text()) or {}).get("architecture"))})
        return ModalityInfo(name, package, summary, recipes, archs)
    try:
        m = get_modality(name)
    except Exception as err:  # noqa: BLE001 - a broken plugin is reported, not fatal
        return ModalityInfo(name, package, f"(fails to load: {err})", {}, [])
    return ModalityInfo(name, package, m.description, _yaml_files(m.recipes), sorted(m.architectures))


def describe_installed(details: bool = True) -> list[ModalityInfo]:
    """Every installed modality as :class:`ModalityInfo`. One whose ``recipes`` folder lies beside its module is
    read from disk (recipe files; with ``details``, its package docstring and the recipes' architectures); any
    other is imported to ask. Without ``details`` only the recipes are filled in (what resolving a recipe needs)."""
    eps = _entry_points()
    return [_describe(name, package, eps, details) for name, package in installed().items()]
