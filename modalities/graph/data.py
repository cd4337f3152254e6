"""Graph data: PyG's bundled KarateClub, generated node- and graph-classification sets, Planetoid (Cora, CiteSeer)
and TU sets (MUTAG, PROTEINS, IMDB-BINARY) read offline from ``$ZOO_DATA`` — copied into a writable cache
first, because PyG writes ``processed/`` beside ``raw/`` —, any PyG ``Dataset``, and node/edge tables through
``datasets``."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo import BadExample, ExampleSet, Unreadable
from zoo.paths import cache_dir, data_dir
from zoo.plugin import source_loader

from .nodes import checked_edges

logger = logging.getLogger(__name__)


def _writable_copy(kind: str, name: str, required: tuple[str, ...] = ()) -> Path:
    """The cache folder holding a copy of ``$ZOO_DATA/<kind>/<name>/raw``, which must hold ``required``."""
    src = data_dir() / kind / name / "raw"
    if not src.is_dir():
        raise FileNotFoundError(f"{kind}/{name} not found under {data_dir()} (set ZOO_DATA)")
    missing = [f for f in required if not (src / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{kind}/{name} is incomplete under {data_dir()}: missing {', '.join(missing)}")
    root = cache_dir() / kind
    if not (root / name / "raw").is_dir():
        shutil.copytree(src, root / name / "raw")
    return root


def _karate(spec: dict[str, Any]) -> ExampleSet:
    from torch_geometric.datasets import KarateClub
    return ExampleSet([KarateClub()[0]], None, ["karate"], None)


def _planetoid(spec: dict[str, Any]) -> ExampleSet:
    from torch_geometric.datasets import Planetoid
    name = spec.get("name", "Cora")
    raw = tuple(f"ind.{name.lower()}.{part}" for part in ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index"))
    data = Planetoid(str(_writable_copy("planetoid", name, raw)), name)[0]
    return ExampleSet([data], None, [name], None)


def _tu(spec: dict[str, Any]) -> ExampleSet:
    from torch_geometric.datasets import TUDataset
    name = spec.get("name", "MUTAG")
    ds = TUDataset(str(_writable_copy("tu", name)), name)
    graphs = [ds[i] for i in range(len(ds))]
    return ExampleSet(graphs, [int(g.y) for g in graphs], [f"{name}[{i}]" for i in range(len(graphs))], None)


def _motifs(spec: dict[str, Any]) -> ExampleSet:
    """Generated graph classification: rings vs stars vs paths vs complete graphs with random sizes and
    one-hot degree-free features (a constant plus noise), ``n`` graphs from ``seed``."""
    from torch_geometric.data import Data
    g = torch.Generator().manual_seed(int(spec.get("seed", 0)))
    graphs, labels = [], []
    for i in range(int(spec.get("n", 120))):
        label = i % 4
        n = int(torch.randint(5, 13, (1,), generator=g))
        ar = torch.arange(n)
        if label == 0:
            src, dst = ar, (ar + 1) % n
        elif label == 1:
            src, dst = torch.zeros(n - 1, dtype=torch.long), ar[1:]
        elif label == 2:
            src, dst = ar[:-1], ar[1:]
        else:
            src, dst = torch.combinations(ar).T
        edges = torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], dim=1)
        x = torch.cat([torch.ones(n, 1), 0.1 * torch.randn(n, 3, generator=g)], dim=1)
        graphs.append(Data(x=x, edge_index=edges))
        labels.append(label)
    return ExampleSet(graphs, labels, [f"motif[{i}]" for i in range(len(graphs))], ["ring", "star", "path", "clique"])


DENSE_SBM_MAX = 20_000     # up to this many nodes the SBM draws its n x n adjacency (the demo's graphs, unchanged)


def _sbm_edges_sparse(y: torch.Tensor, k: int, p_in: float, p_out: float, g: torch.Generator) -> torch.Tensor:
    """Undirected SBM pairs ``[2, M]`` (``u < v``) without an ``n x n`` matrix: per block pair a binomial number
    of edges, endpoints drawn uniformly inside the two blocks; a repeated pair or a self-pair (a share of about
    ``p`` of the draws) is dropped. Memory and time grow with the edges, not with ``n²``."""
    n = y.numel()
    order = torch.argsort(y, stable=True)                            # block members, block by block
    sizes = torch.bincount(y, minlength=k)
    starts = torch.cumsum(sizes, 0) - sizes
    ends = []
    for a in range(k):                                               # k² block pairs: a loop over blocks only
        for b in range(a, k):
            na, nb = int(sizes[a]), int(sizes[b])
            pairs = na * (na - 1) / 2 if a == b else na * nb
            p = p_in if a == b else p_out
            m = int(torch.binomial(torch.tensor(float(pairs), dtype=torch.float64),
                                   torch.tensor(p, dtype=torch.float64), generator=g))
            u = order[starts[a] + torch.randint(na, (m,), generator=g)]
            v = order[starts[b] + torch.randint(nb, (m,), generator=g)]
            ends.append(torch.stack([torch.minimum(u, v), torch.maximum(u, v)]))
    lo, hi = torch.cat(ends, dim=1)
    key = torch.unique(lo[lo != hi] * n + hi[lo != hi])
    return torch.stack([key // n, key % n])


def _sbm(spec: dict[str, Any]) -> ExampleSet:
    """Generated node classification, shaped like a Planetoid split: a stochastic block model of ``n`` nodes
    in ``classes`` blocks (edge probability ``p_in`` within a block, ``p_out`` across — or, given instead,
    ``degree_in``/``degree_out``: the expected neighbours inside and outside one's block, which keep the degrees
    when ``n`` changes), sparse binary bag-of-words features whose word distribution depends on the block, and
    train/val/test masks with ``train_per_class`` training nodes per class and ``val`` validation nodes, all
    from ``seed``. Up to ``DENSE_SBM_MAX`` nodes the adjacency is drawn as a dense ``n x n`` matrix (the graphs
    of the small recipes); above, :func:`_sbm_edges_sparse` draws the edges per block pair (200,000 nodes and
    2,000,000 edges in seconds)."""
    from torch_geometric.data import Data
    g = torch.Generator().manual_seed(int(spec.get("seed", 0)))
    n, k = int(spec.get("n", 300)), int(spec.get("classes", 3))
    words, per_class = int(spec.get("features", 64)), int(spec.get("train_per_class", 10))
    y = torch.arange(n) % k
    if "degree_in" in spec or "degree_out" in spec:
        if "p_in" in spec or "p_out" in spec:
            raise ValueError("sbm: give the edge probabilities (p_in, p_out) or the degrees (degree_in, "
                             "degree_out), not both")
        block = n / k
        p_in = float(spec.get("degree_in", 10.0)) / max(block - 1, 1)
        p_out = float(spec.get("degree_out", 1.0)) / max(n - block, 1)
    else:
        p_in, p_out = float(spec.get("p_in", 0.05)), float(spec.get("p_out", 0.005))
    if not (0 <= p_in <= 1 and 0 <= p_out <= 1):
        raise ValueError(f"sbm: edge probabilities must lie in [0, 1], got p_in={p_in:.4g}, p_out={p_out:.4g}")
    if n <= DENSE_SBM_MAX:
        prob = torch.where(y[:, None] == y[None, :], p_in, p_out)
        upper = torch.triu(torch.rand(n, n, generator=g) < prob, diagonal=1)
        src, dst = upper.nonzero().T
    else:
        src, dst = _sbm_edges_sparse(y, k, p_in, p_out, g)
    edges = torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], dim=1)
    topic = torch.rand(k, words, generator=g) ** 3                        # each block favours its own words
    x = (torch.rand(n, words, generator=g) < 0.15 * topic[y] / topic.mean()).float()
    order = torch.randperm(n, generator=g)
    train = torch.cat([order[y[order] == c][:per_class] for c in range(k)])
    rest = order[~torch.isin(order, train)]
    n_val = int(spec.get("val", n // 5))
    masks = [torch.zeros(n, dtype=torch.bool) for _ in range(3)]
    for mask, idx in zip(masks, (train, rest[:n_val], rest[n_val:])):
        mask[idx] = True
    data = Data(x=x, edge_index=edges, y=y, train_mask=masks[0], val_mask=masks[1], test_mask=masks[2])
    return ExampleSet([data], None, ["sbm"], None)


def _pyg(spec: dict[str, Any]) -> ExampleSet:
    """Any PyG ``Dataset`` (or list of ``Data``) passed in as ``dataset``; graph labels from ``y`` when each
    graph has one scalar label."""
    ds = spec["dataset"]
    graphs = [ds[i] for i in range(len(ds))]
    title = type(ds).__name__
    for i, g in enumerate(graphs):            # edge ids: integers within each graph's nodes (docs/reliability.md)
        if getattr(g, "edge_index", None) is not None and getattr(g, "num_nodes", None) is not None:
            checked_edges(g.edge_index, int(g.num_nodes), f"{title}[{i}]")
    ys = [getattr(g, "y", None) for g in graphs]
    labels = [int(y) for y in ys] if all(y is not None and y.numel() == 1 for y in ys) and len(graphs) > 1 else None
    name = type(ds).__name__
    return ExampleSet(graphs, labels, [f"{name}[{i}]" for i in range(len(graphs))], None)


TABLE_SUFFIXES = (".csv", ".parquet", ".json", ".jsonl")


def _table(obj: Any, split: str, what: str = "nodes"):
    """A ``datasets.Dataset`` as given, or loaded with ``datasets.load_dataset``: a csv/parquet/json file or
    a dataset id."""
    from datasets import Dataset, load_dataset
    if isinstance(obj, Dataset):
        return obj
    suffix = Path(str(obj)).suffix
    if suffix in TABLE_SUFFIXES:
        if suffix == ".csv" and Path(str(obj)).is_file() and \
                not Path(str(obj)).read_bytes()[:65536].strip(b"\r\n\t ,;").count(b"\n"):
            # a header alone: `datasets` would say "Instruction train corresponds to no data!"
            raise ValueError(f"{obj}: the file has no {what} (no rows below its header; the {what} table needs one "
                             f"row per {what[:-1]})")
        return load_dataset("json" if suffix == ".jsonl" else suffix[1:], data_files=str(obj), split="train")
    return load_dataset(str(obj), split=split)


def _columns(table, wanted: list[str], what: str) -> None:
    missing = [c for c in wanted if c not in table.column_names]
    if missing:
        raise KeyError(f"{what} table: unknown column(s) {missing} (columns: {table.column_names})")


def _tables(spec: dict[str, Any]) -> ExampleSet:
    """Graphs from two ``datasets`` tables, one row per node and one per edge (the layout of graph data on the
    Hub): ``nodes`` with an id column (``node_column``, default ``id``), feature columns (``features``: a list
    of columns, or one column of lists) and optionally ``label_column``; ``edges`` with ``source_column`` and
    ``target_column`` (default ``source``/``target``) naming node ids. With ``graph_column`` present in both
    tables, each value is one graph (graph-level data; its label is the first node's ``label_column``). Without
    it the tables hold one graph and each node is an example (node-level data, :mod:`modalities.graph.nodes`):
    every node with a label when ``label_column`` is given (unlabelled nodes stay in the graph), named by its id;
    ``split_column`` (e.g. values ``train``/``val``/``test``) keeps the nodes whose value is ``split``."""
    from torch_geometric.data import Data
    split = spec.get("split", "train")
    split_col = spec.get("split_column")
    nodes = _table(spec["nodes"], "train" if split_col else split, "nodes")
    edges = _table(spec["edges"], "train" if split_col else split, "edges")
    node_col, src_col, dst_col = (spec.get("node_column", "id"), spec.get("source_column", "source"),
                                  spec.get("target_column", "target"))
    features = spec.get("features", "features")
    features = [features] if isinstance(features, str) else list(features)
    graph_col, label_col = spec.get("graph_column"), spec.get("label_column")
    _columns(nodes, [node_col, *features] + [c for c in (graph_col, label_col, split_col) if c], "nodes")
    if split_col and graph_col:
        raise ValueError("split_column splits the nodes of one graph (node-level data): graphs with a graph_column "
                         "are split by folder (train/, test/) or by the datasets split")
    _columns(edges, [src_col, dst_col] + ([graph_col] if graph_col else []), "edges")
    import pandas as pd
    nd, ed = nodes.to_pandas(), edges.to_pandas()
    if len(features) == 1 and len(nd) and hasattr(nd[features[0]].iloc[0], "__len__"):
        x_all = torch.tensor(np.stack(nd[features[0]].to_numpy()).astype("float32"))
    else:
        x_all = torch.tensor(nd[features].to_numpy(dtype="float32"))
    n_graph = nd[graph_col] if graph_col else pd.Series(0, index=nd.index)
    e_graph = ed[graph_col] if graph_col else pd.Series(0, index=ed.index)
    keys = pd.MultiIndex.from_arrays([n_graph, nd[node_col]])
    if not keys.is_unique:
        raise BadExample("nodes", node_col, "node ids repeat within a graph")
    local = torch.tensor(nd.groupby(n_graph.to_numpy(), sort=False).cumcount().to_numpy())  # row within its graph
    ends = []
    source = spec["edges"]
    where = str(source) if isinstance(source, (str, Path)) else "the edges table"
    csv = Path(where).suffix in (".csv", ".tsv")
    unreadable: dict[Any, BadExample] = {}        # graph id → why (graph-level: that graph alone is unreadable)
    for col in (src_col, dst_col):
        pos = keys.get_indexer(pd.MultiIndex.from_arrays([e_graph, ed[col]]))
        missing = np.flatnonzero(pos < 0)
        firsts = pd.Series(missing).groupby(e_graph.to_numpy()[missing], sort=False).first() if len(missing) else []
        for i in firsts:                          # each graph's first edge to a missing node
            row = f"line {i + 2}" if csv else f"row {i}"          # a CSV's header is its line 1
            bad, gid = (v.item() if hasattr(v, "item") else v for v in (ed[col].iloc[i], e_graph.iloc[i]))
            error = BadExample(where, col, f"{row}" + (f" (graph {gid!r})" if graph_col else "")
                               + f": node id {bad!r} is not in the nodes table "
                               f"({int((pos < 0).sum())} edge(s) in all)")
            if not graph_col:                     # one graph: the whole table is that graph
                raise error
            unreadable.setdefault(gid, error)
        ends.append(local[torch.tensor(np.where(pos < 0, 0, pos))])
    if not graph_col:
        return _node_level(nd, x_all, torch.stack(ends), spec, node_col, label_col, split_col, split)
    node_rows, edge_rows = n_graph.groupby(n_graph.to_numpy()).indices, e_graph.groupby(e_graph.to_numpy()).indices
    label_names, empty = None, None
    col = nd[label_col] if label_col else None
    if col is not None:                       # an empty cell is no label (-1 here, None below), never a class 'nan'
        empty = col.isna().to_numpy()
        known = col.dropna()
        if bool(empty.any()) and pd.api.types.is_float_dtype(col) and bool((known == known.round()).all()):
            col = col.astype("Int64")         # whole numbers with empty cells read as floats: 1, not '1.0'
    if col is not None and not pd.api.types.is_integer_dtype(col):
        label_names = sorted({str(v) for v in col.dropna()})          # names (strings) → ids in sorted order
        ids = col.astype(str).map({n: i for i, n in enumerate(label_names)})
        y_all = torch.tensor(ids.where(~col.isna(), -1).astype("int64").to_numpy())
    else:
        y_all = torch.tensor(col.fillna(-1).astype("int64").to_numpy()) if col is not None else None
    graphs, labels, names = [], [], []
    for gid, rows in node_rows.items():
        erows = torch.as_tensor(edge_rows.get(gid, np.zeros(0, dtype=np.int64)))
        data = Data(x=x_all[rows], edge_index=torch.stack([ends[0][erows], ends[1][erows]]))
        gkey = gid.item() if hasattr(gid, "item") else gid
        if gkey in unreadable:                    # in its place, so that skip_bad skips and counts it alone
            data = Unreadable(unreadable[gkey])
        if y_all is not None:
            y = y_all[rows][:1] if graph_col else y_all[rows]
            if not isinstance(data, Unreadable):
                data.y = y
            labels.append(None if bool(empty[rows[0]]) else int(y[0]))
        graphs.append(data)
        names.append(str(gid))
    return ExampleSet(graphs, labels if graph_col and label_col else None, names,
                      label_names if graph_col else None)


def _node_level(nd: Any, x: torch.Tensor, edge_index: torch.Tensor, spec: dict[str, Any], node_col: str,
                label_col: str | None, split_col: str | None, split: str) -> ExampleSet:
    """One graph's nodes as examples (:func:`_tables` without ``graph_column``)."""
    import pandas as pd
    from torch_geometric.data import Data

    from .nodes import NodeExamples, SharedGraph
    keep = np.ones(len(nd), dtype=bool)
    if split_col:
        values = nd[split_col].astype(str)
        if not (values == split).any():
            raise ValueError(f"nodes table: no node has {split_col} = {split!r} (values: "
                             f"{sorted(set(values))[:10]})")
        keep &= (values == split).to_numpy()
    labels = label_names = None
    if label_col:
        col = nd[label_col]
        keep &= col.notna().to_numpy()
        if col.isna().any():                  # counted, never a class 'nan' (docs/reliability.md)
            logger.warning("%d of %d nodes have an empty %r cell: they stay in the graph but are not examples "
                           "(unlabelled nodes)", int(col.isna().sum()), len(col), label_col)
        known = col[col.notna()]
        numeric = pd.api.types.is_numeric_dtype(col) and bool((known == known.round()).all())
        if numeric:
            ids = col.fillna(-1).astype("int64")
        else:
            label_names = sorted({str(v) for v in known})
            ids = col.map(lambda v: -1 if pd.isna(v) else label_names.index(str(v)))
        labels = [int(v) for v in ids.to_numpy()[keep]]
    source = spec["nodes"]
    graph = SharedGraph(Data(x=x, edge_index=edge_index, num_nodes=x.shape[0]),
                        Path(source).parent.name if isinstance(source, (str, Path)) else "graph")
    rows = np.flatnonzero(keep)
    names = [str(v) for v in nd[node_col].to_numpy()[rows]]
    return ExampleSet(NodeExamples(graph, torch.as_tensor(rows)), labels, names, label_names)


GRAPH_COLUMNS = ("id", "graph", "source", "target", "split")


def _folder_file(folder: Path, stem: str) -> Path:
    found = [folder / f"{stem}{suffix}" for suffix in TABLE_SUFFIXES if (folder / f"{stem}{suffix}").is_file()]
    if not found:
        raise FileNotFoundError(f"{folder}: no {stem}.csv / .parquet / .json (a graph folder holds a nodes table "
                                "and an edges table)")
    return found[0]


def graph_folder(path: str | Path, label_column: str | None = None, split: str | None = None,
                 exclude: Any = (), split_column: str = "split") -> dict[str, Any]:
    """The ``tables`` spec of a folder of graphs as a user hands them over: ``nodes.csv`` (columns ``graph``,
    ``id``, the label column and the numeric node features: every other column) and ``edges.csv`` (``graph``,
    ``source``, ``target``), or ``train/`` and ``test/`` subfolders holding both; parquet/JSON work too. Each
    ``graph`` value is one graph, labelled by its nodes' ``label_column``. Without a ``graph`` column the folder
    holds one graph whose nodes are the examples (node classification); a ``split`` column (``train``/``val``/
    ``test``) then splits its nodes."""
    folder, want = Path(path), split or "train"
    if (folder / want).is_dir():
        folder = folder / want
    nodes, edges = _folder_file(folder, "nodes"), _folder_file(folder, "edges")
    table = _table(nodes, "train")                            # the reader _tables uses (datasets caches it)
    columns = table.column_names
    if want != "train" and folder == Path(path) and split_column not in columns:
        raise FileNotFoundError(f"{path}: no {want}/ subfolder (and no split column in {nodes.name})")
    numeric = {c for c, f in table.features.items() if getattr(f, "dtype", "").startswith(("int", "uint", "float"))}
    features = [c for c in columns if c not in GRAPH_COLUMNS and c not in (label_column, "label", split_column,
                                                                            *exclude)
                and c in numeric]                              # text columns (names, labels) are not features
    if not features:
        raise ValueError(f"{nodes}: no feature columns besides {columns}")
    spec: dict[str, Any] = {"source": "tables", "nodes": str(nodes), "edges": str(edges), "features": features}
    if "graph" in columns:
        spec["graph_column"] = "graph"
    elif split_column in columns:                              # node-level data with the user's node split
        spec["split_column"], spec["split"] = split_column, want
    label_column = label_column or ("label" if "label" in columns else None)     # a "label" column labels
    if label_column:
        spec["label_column"] = label_column
    return spec


def _folder(spec: dict[str, Any]) -> ExampleSet:
    """``path``: a graph folder as :func:`graph_folder` describes (``label_column`` optional: pretraining needs
    none; never a feature; ``split_column``, default ``split``: the node split of one graph)."""
    return _tables(graph_folder(spec["path"], spec.get("label_column"), spec.get("split"),
                                split_column=spec.get("split_column", "split")))


SOURCES = {"karate": _karate, "planetoid": _planetoid, "tu": _tu, "motifs": _motifs, "sbm": _sbm, "pyg": _pyg,
           "tables": _tables, "folder": _folder}

_load_source = source_loader("graph", SOURCES, "motifs")


def load_data(spec: dict[str, Any]) -> ExampleSet:
    """Load graph data from one of the sources in ``SOURCES`` (default ``motifs``). With ``minibatch`` (see
    :class:`~modalities.graph.sampling.MinibatchConfig`) the one graph of a node-level source becomes a set of
    seeded subgraph batches (:func:`~modalities.graph.sampling.minibatches`) for graphs too large for
    full-batch training."""
    spec = dict(spec)
    minibatch = spec.pop("minibatch", None)
    data = _load_source(spec)
    if minibatch is None:
        return data
    from .sampling import minibatches
    return minibatches(data, minibatch)
