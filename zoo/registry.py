"""Find modality plugins through the ``zoo.modalities`` entry-point group (built-ins use it too)."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from .plugin import Modality

__all__ = ["GROUP", "UnknownModality", "installed", "get_modality", "register"]

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
    modality = obj() if callable(obj) and not isinstance(obj, Modality) else obj
    if not isinstance(modality, Modality) or modality.name != name:
        raise TypeError(f"entry point {eps[name].value} must give a zoo.Modality named {name!r}")
    _loaded[name] = modality
    return modality
