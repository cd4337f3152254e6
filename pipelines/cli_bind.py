"""``zoo bind`` (train a bound model from a bind recipe) and ``zoo search`` (search one modality with another in a
bound model's shared space); docs/command-line.md, "Binding"."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["add_bind", "add_search", "search"]


def _cmd_bind(args: argparse.Namespace) -> int:
    from .bind import bind, load_bind_recipe
    from .data_spec import command_line
    recipe = load_bind_recipe(args.recipe, args.set)
    out = Path(args.output or Path("runs") / recipe.name)
    command = command_line("bind", args.recipe, [*[("--set", s) for s in args.set]])
    summary = bind(recipe, out, resume=not args.no_resume, command=command, report_to=args.report_to)
    print(json.dumps(summary, indent=2))
    return 0


def add_bind(sub: Any) -> None:
    from .trackers import add_report_to
    s = sub.add_parser("bind", help="bind two or more modalities into one embedding space (CLIP-style) from a bind "
                                    "recipe; resumes a killed run")
    s.add_argument("recipe", help="bind recipe name (pipelines/bind_recipes) or YAML path")
    s.add_argument("--output", help="run folder (default: runs/<recipe name>)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. bind.sides.audio.train=frozen or train.steps=10 (repeatable)")
    s.add_argument("--no-resume", action="store_true", help="start over even if checkpoints exist")
    add_report_to(s)
    s.set_defaults(func=_cmd_bind)


def _side_vectors(model: Any, modality: str, inputs: list[str], batch_size: int,
                  name_column: str | None = None) -> tuple[torch.Tensor, list[str]]:
    """Inputs (files, folders, tables; or one ``.safetensors`` file that ``zoo embed MODEL --modality M`` wrote, or
    its ``--output`` folder) → that side's unit vectors in the shared space and their names."""
    from .data_spec import named_inputs
    if len(inputs) == 1 and (inputs[0].endswith(".safetensors") or (Path(inputs[0]) / "index.json").is_file()):
        return _stored(inputs[0], model.dim, modality, model.signature(modality))
    named = [pair for path in inputs for pair in named_inputs(model.processors[modality], path, name_column)]
    if not named:
        raise ValueError(f"no {modality} inputs found in {inputs}")
    names = [n for n, _ in named]
    return model.embed(modality, [ex for _, ex in named], names=names, batch_size=batch_size), names


def _stored(path: str, dim: int, modality: str, signature: str) -> tuple[torch.Tensor, list[str]]:
    """Stored vectors, refused unless ``zoo embed`` wrote them for this side of this bound model (the side and its
    signature recorded beside them: vectors of another side or another model would rank without meaning)."""
    from safetensors import safe_open

    from .evaluate import load_shards
    if path.endswith(".safetensors"):
        with safe_open(path, framework="pt") as fh:
            meta = fh.metadata() or {}
            emb, names = fh.get_tensor("embeddings"), json.loads(meta.get("names", "[]"))
    else:
        emb, _, names = load_shards(Path(path) / "index.json")
        bound = Path(path) / "bound.json"
        meta = json.loads(bound.read_text()) if bound.is_file() else {}
    if meta.get("bound_side") is None:
        raise ValueError(f"{path}: these vectors record no bound model's side: write the index with zoo embed MODEL "
                         f"--modality {modality} --output ...")
    if meta["bound_side"] != modality:
        raise ValueError(f"{path}: these are {meta['bound_side']} vectors, not {modality}: search a {modality} index "
                         f"(or --index-modality {meta['bound_side']})")
    if meta.get("bound_signature") != signature:
        raise ValueError(f"{path}: these {modality} vectors were written with another bound model (or another "
                         "version of it): embed the index again with this model")
    if emb.ndim != 2 or emb.shape[1] != dim or len(names) != emb.shape[0]:
        raise ValueError(f"{path}: {tuple(emb.shape)} embeddings with {len(names)} names are not this bound model's "
                         f"shared space (width {dim}): write them with zoo embed MODEL --modality M --output")
    return emb.float(), names


def search(model: Any, query: list[str], index: list[str], *, query_modality: str, index_modality: str,
           top_k: int = 5, batch_size: int = 32, name_column: str | None = None,
           query_name_column: str | None = None) -> list[dict[str, Any]]:
    """Each query's ``top_k`` nearest index entries by cosine similarity in the shared space (the index's table
    rows named by ``name_column``, the queries' by ``query_name_column``)."""
    if query_modality == index_modality:
        raise ValueError(f"--query-modality and --index-modality are both {query_modality!r}: search one side with "
                         "another")
    for m in (query_modality, index_modality):
        model.side(m)
    q, q_names = _side_vectors(model, query_modality, query, batch_size, query_name_column)
    x, x_names = _side_vectors(model, index_modality, index, batch_size, name_column)
    sims = model.similarity(q, x)
    k = min(top_k, len(x_names))
    scores, idx = sims.topk(k, dim=1)
    return [{"query": name, "results": [{"match": x_names[j], "score": round(float(s), 4)}
                                        for s, j in zip(scores[i].tolist(), idx[i].tolist())]}
            for i, name in enumerate(q_names)]


def _cmd_search(args: argparse.Namespace) -> int:
    from zoo import AutoEncoder
    from zoo.bound import BoundModel
    model = AutoEncoder.from_pretrained(args.model)
    if not isinstance(model, BoundModel):
        raise ValueError(f"{args.model} is a {model.modality} model: zoo search needs a bound model (zoo bind)")
    sides = model.sides
    query_modality = args.query_modality or sides[0]
    index_modality = args.index_modality or next(m for m in sides if m != query_modality)
    found = search(model, args.query, args.index, query_modality=query_modality, index_modality=index_modality,
                   top_k=args.top_k, batch_size=args.batch_size, name_column=args.name_column,
                   query_name_column=args.query_name_column)
    for row in found:
        if args.json:
            print(json.dumps(row))
        else:
            print(f"{row['query']} ({query_modality}) → {index_modality}:")
            for rank, r in enumerate(row["results"], 1):
                print(f"  {rank}. {r['match']}\t{r['score']:.4f}")
    return 0


def name_column_arg(parser: argparse.ArgumentParser, what: str = "rows") -> None:
    """``--name-column COL``: a table's rows named by that column's cell instead of ``FILE[ROW]``."""
    parser.add_argument("--name-column", metavar="COL",
                        help=f"name a table's {what} by this column (e.g. an id) instead of FILE[ROW]")


def add_search(sub: Any) -> None:
    s = sub.add_parser("search", help="search one modality with another in a bound model's shared space")
    s.add_argument("model", help="a bound model folder or Hub id (zoo bind)")
    s.add_argument("--query", nargs="+", required=True, help="query files, folders or tables")
    s.add_argument("--index", nargs="+", required=True,
                   help="what to search: files, folders or tables of the other side, or the .safetensors file / "
                        "folder that `zoo embed MODEL --modality M --output` wrote")
    s.add_argument("--query-modality", help="the queries' side (default: the model's first side)")
    s.add_argument("--index-modality", help="the index's side (default: the other side)")
    s.add_argument("--top-k", type=int, default=5)
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--json", action="store_true", help="one JSON line per query")
    name_column_arg(s, "rows in --index")
    s.add_argument("--query-name-column", metavar="COL",
                   help="name the rows in --query tables by this column's cell instead of FILE[ROW]")
    s.set_defaults(func=_cmd_search)
