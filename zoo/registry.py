"""Find modality plugins through the ``zoo.modalities`` entry-point group (built-ins use it too)."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from .plugin import Modality

__all__ = ["GROUP", "UnknownModality", "installed", "get_modality", "register"]

GROUP = "zoo.modalities"

# Where the modalities this project plans come from, for the error message of a missing one.
PROVIDERS = {
    "audio": "ssl-zoo[audio] (built-in modality 'modalities.audio')",
    "video": "ssl-zoo[video] (built-in modality 'modalities.video')",
    "pointcloud": "ssl-zoo[pointcloud] (built-in modality 'modalities.pointcloud')",
    "graph": "ssl-zoo[graph] (built-in modality 'modalities.graph')",
    "tabular": "ssl-zoo[tabular] (built-in modality 'modalities.tabular')",
    "events": "ssl-zoo[events] (built-in modality 'modalities.events')",
}

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
        hint = PROVIDERS.get(name, f"a plugin package registering '{name}' under the '{GROUP}' entry points")
        raise UnknownModality(
            f"modality {name!r} is not installed (installed: {have}). It is provided by {hint}.")
    try:
        obj = eps[name].load()
    except ImportError as err:
        hint = PROVIDERS.get(name, f"the package providing {name!r}")
        raise ImportError(f"modality {name!r} is installed but needs {err.name or err}: install {hint}") from err
    modality = obj() if callable(obj) and not isinstance(obj, Modality) else obj
    if not isinstance(modality, Modality) or modality.name != name:
        raise TypeError(f"entry point {eps[name].value} must give a zoo.Modality named {name!r}")
    _loaded[name] = modality
    return modality
