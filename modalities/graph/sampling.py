"""Seeded subgraph mini-batches for GraphMAE on graphs too large for full-batch training, in vectorised PyTorch
(no compiled sampler extension).

Each training example is one subgraph: a batch of seed nodes plus a sampled k-hop neighbourhood with a fan-out
cap per hop (GraphSAGE's fixed-size neighbour sampling, Hamilton et al. 2017), and then *every* edge among those
nodes (the node-induced subgraph), relabelled through a CSR of in-edges. The pretraining loss is taken on the seed
nodes only — the nodes whose neighbourhood the subgraph holds — as GraphMAE2 (Hou et al. 2023) trains on
sampled subgraphs of large graphs.

Determinism (docs/architecture.md, "Data" and "Run lifecycle"): subgraph ``i`` is a pure function of
``(seed, i)``. Pass ``p = i // blocks`` permutes the nodes with a generator seeded by ``(seed, p)`` and block
``b = i % blocks`` of it gives the seeds (every node is a seed once per pass); the neighbour draws use a
generator seeded by ``(seed, i)``. The engine's map-style sampler picks ``i`` from the step, so a SIGKILLed run
resumes bit for bit with the one integer it already checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from zoo import ExampleSet
from zoo.config import Config
from zoo.masking import NodeMask, node_mask

from .nodes import checked_edges

__all__ = ["MinibatchConfig", "InEdges", "sample_neighbours", "sample_subgraph", "SubgraphBatches", "minibatches",
           "seed_node_mask"]


@dataclass
class MinibatchConfig(Config):
    """``data.train.minibatch`` of a node-level graph recipe."""

    batch_nodes: int = 1024                 # seed nodes per subgraph (the loss is taken on them)
    fanout: list[int] = field(default_factory=lambda: [10, 10])   # neighbours sampled per node, hop by hop
    passes: int = 64                        # distinct passes over the nodes before the draws repeat
    seed: int = 0                           # seeds the node permutations and the neighbour draws

    def validate(self) -> None:
        self.check(self.batch_nodes >= 1, "batch_nodes", "must be >= 1")
        self.check(all(f >= 1 for f in self.fanout), "fanout",
                   "every hop must sample >= 1 neighbour per node (an empty list: the seeds' induced subgraph)")
        self.check(self.passes >= 1, "passes", "must be >= 1")


def _generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded by a tuple of integers (as ``pipelines.data.example_generator`` mixes them)."""
    h = 0
    for k in keys:
        h = (h * 1_000_003 + int(k)) * 2_654_435_761 % (2**63 - 1)
    return torch.Generator().manual_seed(h)


class InEdges:
    """The in-edges of every node as CSR: ``sources[ptr[v]:ptr[v + 1]]`` are the nodes with an edge into ``v``
    (message passing runs source → target). Built once with one stable sort."""

    def __init__(self, edge_index: Tensor, num_nodes: int) -> None:
        src, dst = edge_index[0].long(), edge_index[1].long()
        order = torch.argsort(dst, stable=True)
        self.sources = src[order]
        self.ptr = torch.zeros(num_nodes + 1, dtype=torch.long)
        torch.cumsum(torch.bincount(dst, minlength=num_nodes), 0, out=self.ptr[1:])
        self.num_nodes = num_nodes

    def of(self, nodes: Tensor) -> tuple[Tensor, Tensor]:
        """All in-edges of ``nodes``: ``(position in nodes of the target, source)``, target by target."""
        start, deg = self.ptr[nodes], self.ptr[nodes + 1] - self.ptr[nodes]
        owner = torch.repeat_interleave(torch.arange(nodes.numel()), deg)
        first = torch.cumsum(deg, 0) - deg                               # each target's first edge in the output
        pos = torch.arange(owner.numel()) - first[owner] + start[owner]
        return owner, self.sources[pos]


def sample_neighbours(csr: InEdges, nodes: Tensor, fanout: int, generator: torch.Generator) -> Tensor:
    """Up to ``fanout`` in-neighbours of each of ``nodes`` (with repeats; the caller merges them): all of them
    for a node with at most ``fanout``, else ``fanout`` uniform draws among them, as GraphSAGE (Hamilton et al.
    2017) samples a fixed-size neighbourhood. Costs ``O(len(nodes) * fanout)``, not the frontier's degree sum."""
    start, deg = csr.ptr[nodes], csr.ptr[nodes + 1] - csr.ptr[nodes]
    few = deg <= fanout
    _, every = csr.of(nodes[few])
    many = (~few).nonzero().squeeze(1)
    draws = torch.rand(many.numel(), fanout, generator=generator)
    picked = start[many, None] + (draws * deg[many, None]).long().clamp(max=deg[many, None] - 1)
    return torch.cat([every, csr.sources[picked.reshape(-1)]])


def sample_subgraph(csr: InEdges, seeds: Tensor, fanout: Sequence[int], generator: torch.Generator,
                    reach: InEdges | None = None) -> tuple[Tensor, Tensor]:
    """The node-induced subgraph of ``seeds`` and their sampled neighbourhood, hop by hop (``fanout[h]``
    neighbours per node of hop ``h``'s frontier, drawn from ``reach``'s in-edges, default ``csr``'s). Returns
    ``(nodes, edge_index)``: the global ids, seeds first and in the order given, then each hop's new nodes in
    ascending order; every edge of ``csr`` between two of them, relabelled to positions in ``nodes``."""
    reach = reach if reach is not None else csr
    n = csr.num_nodes
    seen = torch.zeros(n, dtype=torch.bool)
    seen[seeds] = True
    parts, frontier = [seeds], seeds
    for f in fanout:
        if frontier.numel() == 0:
            break
        found = torch.unique(sample_neighbours(reach, frontier, int(f), generator))
        frontier = found[~seen[found]]
        seen[frontier] = True
        parts.append(frontier)
    nodes = torch.cat(parts)
    local = torch.full((n,), -1, dtype=torch.long)
    local[nodes] = torch.arange(nodes.numel())
    target, src = csr.of(nodes)
    keep = local[src] >= 0
    return nodes, torch.stack([local[src[keep]], target[keep]])


def _both_ways(edge_index: Tensor, num_nodes: int, csr: InEdges) -> InEdges:
    """Where neighbours are drawn from: every edge in both directions, each pair once, so that the sampled
    neighbourhood is the same whether an edge list names an undirected edge once or both ways (the induced
    subgraph keeps the edges as listed; the processor reads them undirected unless ``directed: true``). A graph
    already listed both ways (PyG's Planetoid, the SBM) keeps its own CSR (the same draws as before)."""
    from .nodes import undirected
    both = undirected(edge_index, num_nodes)
    listed = torch.sort(edge_index[0].long() * max(num_nodes, 1) + edge_index[1].long()).values
    if both.shape[1] == listed.numel() and torch.equal(both[0] * max(num_nodes, 1) + both[1], listed):
        return csr
    return InEdges(both, num_nodes)


class SubgraphBatches(Sequence):
    """A lazy sequence of subgraphs of one graph (module docstring): ``len = passes x blocks`` with
    ``blocks = num_nodes // batch_nodes`` (the last partial block of a pass is left out, as ``drop_last``
    does). Item ``i`` is a PyG ``Data`` with the subgraph's raw features ``x``, ``edge_index``, ``seed_mask``
    (True on the seed nodes, which come first) and ``node_ids`` (global ids)."""

    def __init__(self, graph: Any, cfg: MinibatchConfig, name: str = "graph") -> None:
        self.x, self.num_nodes, self.cfg = getattr(graph, "x", None), int(graph.num_nodes), cfg
        if cfg.batch_nodes > self.num_nodes:
            raise ValueError(f"data.train.minibatch.batch_nodes={cfg.batch_nodes} exceeds the graph's "
                             f"{self.num_nodes} nodes: set a smaller one, or data.train.minibatch=null (full-batch)")
        edges = checked_edges(graph.edge_index, self.num_nodes, name)    # never dropped, never truncated
        self.csr = InEdges(edges, self.num_nodes)
        self.reach = _both_ways(edges, self.num_nodes, self.csr)
        self.blocks = self.num_nodes // cfg.batch_nodes

    def __len__(self) -> int:
        return self.blocks * self.cfg.passes

    def seeds(self, i: int) -> Tensor:
        """The seed nodes of subgraph ``i``."""
        p, b = divmod(i, self.blocks)
        perm = torch.randperm(self.num_nodes, generator=_generator(self.cfg.seed, p, 0))
        return perm[b * self.cfg.batch_nodes:(b + 1) * self.cfg.batch_nodes]

    def __getitem__(self, i: int) -> Any:
        from torch_geometric.data import Data
        if not -len(self) <= i < len(self):
            raise IndexError(f"subgraph {i} of {len(self)}")
        i = i % len(self)
        seeds = self.seeds(i)
        nodes, edges = sample_subgraph(self.csr, seeds, self.cfg.fanout, _generator(self.cfg.seed, i, 1),
                                       self.reach)
        seed_mask = torch.arange(nodes.numel()) < seeds.numel()
        x = self.x[nodes] if self.x is not None else None
        return Data(x=x, edge_index=edges, seed_mask=seed_mask, node_ids=nodes, num_nodes=nodes.numel())

    def select(self, idx: Sequence[int]) -> _Picked:
        """``examples[idx]`` without drawing them (``zoo.data.take``; the processor's fit sample reads one)."""
        return _Picked(self, [int(i) for i in idx])


class _Picked(Sequence):
    def __init__(self, base: SubgraphBatches, idx: list[int]) -> None:
        self.base, self.idx = base, idx

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int) -> Any:
        return self.base[self.idx[i]]


class _Names(Sequence):
    def __init__(self, name: str, blocks: int, passes: int) -> None:
        self.name, self.blocks, self.passes = name, blocks, passes

    def __len__(self) -> int:
        return self.blocks * self.passes

    def __getitem__(self, i: int) -> str:
        p, b = divmod(int(i), self.blocks)
        return f"{self.name} subgraph {i} (pass {p}, seed block {b})"


def minibatches(data: ExampleSet, setting: dict[str, Any]) -> ExampleSet:
    """The subgraph batches of the one graph of a node-level data set (``data.train.minibatch``)."""
    from .nodes import NodeExamples
    cfg = MinibatchConfig.from_dict(setting, where="data.train.minibatch")
    if isinstance(data.examples, NodeExamples):     # one's own graph read node by node (a folder): its whole graph
        graph, name = data.examples.graph.data, data.examples.graph.name
    elif len(data) == 1:
        graph, name = data.examples[0], data.name(0)
    else:
        raise ValueError(f"data.train.minibatch samples subgraphs of one large graph (node-level pretraining); "
                         f"this source gave {len(data)} graphs: --set data.train.minibatch=null trains on whole "
                         "graphs")
    batches = SubgraphBatches(graph, cfg, name)
    return ExampleSet(batches, None, _Names(name, batches.blocks, cfg.passes), None)


def seed_node_mask(seeds: Tensor, mask_rate: float, replace_rate: float, generator: torch.Generator) -> NodeMask:
    """GraphMAE's node mask (``zoo.masking.node_mask``) of a sampled subgraph, drawn separately over its seed
    nodes and over the rest: exactly ``round(mask_rate * seeds)`` seeds — where the loss is taken — are masked,
    the context around them at the same rate; replacement features come from the same group."""
    n = seeds.numel()
    mask, token, noise = (torch.zeros(n, dtype=torch.bool, device=seeds.device) for _ in range(3))
    source = torch.zeros(n, dtype=torch.long, device=seeds.device)
    for part in (seeds.nonzero().squeeze(1), (~seeds).nonzero().squeeze(1)):     # two groups, not nodes
        if part.numel():
            m = node_mask(part.numel(), mask_rate, replace_rate, generator=generator, device=seeds.device)
            mask[part], token[part], noise[part], source[part] = m.mask, m.token, m.noise, part[m.noise_source]
    return NodeMask(mask=mask, token=token, noise=noise, noise_source=source)
