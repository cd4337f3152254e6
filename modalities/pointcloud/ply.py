"""What a PLY file's header declares, checked against what the file holds before and after open3d reads it: a
header that declares more vertices than the file can hold (a cut file, or 10^8 vertices in 891 bytes) is refused
before anything is allocated, and a vertex block that does not parse or holds NaN/inf (where open3d stops reading
and pads the rest with zeros) is refused naming the vertex."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zoo import BadExample

__all__ = ["PlyHeader", "read_header", "check_vertices", "MAX_FILE_POINTS"]

MAX_FILE_POINTS = 10_000_000         # vertices a file may declare (a stated bound on what reading may allocate)
TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2", "ushort": "u2",
         "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4", "float": "f4", "float32": "f4",
         "double": "f8", "float64": "f8"}


@dataclass
class PlyHeader:
    format: str                                    # ascii, binary_little_endian, binary_big_endian
    size: int                                      # bytes of the header
    elements: list[tuple[str, int, list[tuple[str, str]]]] = field(default_factory=list)   # name, count, props

    def count(self, name: str) -> int:
        return next((n for e, n, _ in self.elements if e == name), 0)


def read_header(path: str | Path) -> PlyHeader:
    """The header of a PLY file (a ``BadExample`` naming the file when it is not one)."""
    with open(path, "rb") as fh:
        head = fh.read(65536)
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        raise BadExample(str(path), "header", "not a PLY file (no 'ply' ... 'end_header' header)")
    size = head.index(b"\n", end) + 1 if b"\n" in head[end:] else len(head)
    header = PlyHeader("", size)
    for line in head[:end].decode("ascii", "replace").splitlines():
        words = line.split()
        if words[:1] == ["format"] and len(words) > 1:
            header.format = words[1]
        elif words[:1] == ["element"] and len(words) == 3:
            if not words[2].isdigit():
                raise BadExample(str(path), "header", f"element {words[1]!r} has count {words[2]!r}")
            header.elements.append((words[1], int(words[2]), []))
        elif words[:1] == ["property"] and header.elements:
            kind = "list" if words[1:2] == ["list"] else (words[1] if len(words) > 2 else "?")
            header.elements[-1][2].append((kind, words[-1]))
    return header


def check_vertices(path: str | Path, max_points: int = MAX_FILE_POINTS) -> PlyHeader:
    """Check the declared vertex count against ``max_points`` and the file's size, then parse the vertex block's
    x, y, z: every vertex present and finite."""
    path = Path(path)
    header = read_header(path)
    n = header.count("vertex")
    where = str(path)
    if n > max_points:
        raise BadExample(where, "vertex", f"the header declares {n} vertices, more than the {max_points} a file may "
                                          "hold here")
    body = path.stat().st_size - header.size
    for name, count, eprops in header.elements:        # every element fits the file's bytes (faces too)
        least = count * _least_bytes(header.format, eprops)
        if count and body < least:
            what = {"vertex": "vertices", "face": "faces"}.get(name, f"{name!r} elements")
            raise BadExample(where, name, f"the header declares {count} {what}, but the file holds "
                                          f"{max(body, 0)} bytes after its header (at least {least} needed): a cut "
                                          "or damaged file, or a header that does not match its content")
        body -= least
    props = next((p for e, _, p in header.elements if e == "vertex"), [])
    if n == 0 or not props or (header.format != "ascii" and any(kind not in TYPES for kind, _ in props)):
        return header                              # list or unknown properties: open3d decides
    xyz = _xyz(path, header, props, n)
    bad = ~np.isfinite(xyz)
    if bad.any():
        i = int(bad.any(axis=1).nonzero()[0][0])
        raise BadExample(where, "vertex", f"vertex {i}: non-finite coordinate {xyz[i].tolist()}")
    return header


def _least_bytes(fmt: str, props: list[tuple[str, str]]) -> int:
    """The fewest bytes one element of ``props`` takes: a digit and a separator per ASCII value, a binary
    value's size (a list: at least its one-byte count)."""
    if fmt == "ascii":
        return 2 * len(props)
    return sum(np.dtype(TYPES[kind]).itemsize if kind in TYPES else 1 for kind, _ in props)


def _xyz(path: Path, header: PlyHeader, props: list[tuple[str, str]], n: int) -> np.ndarray:
    names = [name for _, name in props]
    if not {"x", "y", "z"} <= set(names):
        raise BadExample(str(path), "vertex", f"vertices have no x, y, z (properties {names})")
    cols = [names.index(c) for c in "xyz"]
    data = path.read_bytes()[header.size:]
    if header.format == "ascii":
        first_vertex = header.elements[0][0] == "vertex"
        lines = [ln for ln in data.split(b"\n", n)[:n] if ln.strip()] if first_vertex else None
        if lines is None:
            return np.zeros((0, 3))
        if len(lines) < n:
            raise BadExample(str(path), "vertex", f"the header declares {n} vertices, the file holds {len(lines)}")
        try:
            return np.loadtxt(io.BytesIO(b"\n".join(lines)), usecols=cols, ndmin=2, dtype=np.float64)
        except ValueError as err:
            raise BadExample(str(path), "vertex", f"the vertex block does not parse ({err})") from None
    if header.elements[0][0] != "vertex":
        return np.zeros((0, 3))
    order = "<" if header.format == "binary_little_endian" else ">"
    dtype = np.dtype([(name, order + TYPES[kind]) for kind, name in props])
    block = np.frombuffer(data[: n * dtype.itemsize], dtype=dtype, count=n)
    return np.stack([block[c].astype(np.float64) for c in "xyz"], axis=1)
