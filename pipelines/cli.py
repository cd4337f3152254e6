"""The ``zoo`` command line: list, pretrain, evaluate, finetune, predict, embed, bind, search, convert, export, card,
publish."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _cmd_list(args: argparse.Namespace) -> int:
    from zoo.registry import describe_installed
    infos = describe_installed()
    print("Installed modalities:")
    if not infos:
        print("  (none: install ssl-zoo[all] or a plugin package)")
    for m in infos:
        print(f"  {m.name:<12} {', '.join(m.architectures):<28} from {m.package}  {m.description}")
    recipes = {name: path for m in infos for name, path in m.recipes.items()}
    print("Recipes:")
    for name, path in sorted(recipes.items()):
        print(f"  {name:<28} {path}")
    if not recipes:
        print("  (none)")
    root = Path(__file__).resolve().parents[1] / "model_cards"
    entries = sorted(p.parent.name for p in root.glob("*/README.md"))
    print("Zoo entries:")
    for e in entries:
        print(f"  {e}")
    if not entries:
        print("  (none published yet)")
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from .data_spec import command_line
    from .pretrain import pretrain, with_own_data
    from .recipe import load_recipe
    if args.include:                                        # --include C is processor.include: [C, ...]
        args.set = [*args.set, f"processor.include={json.dumps(args.include)}"]
    recipe = load_recipe(args.recipe, args.set)
    if args.refit and not args.init:
        raise ValueError("--refit refits the processor of --init: give --init too")
    if args.init:
        from .init import with_init
        recipe = with_init(recipe, args.init, args.set)     # the model's encoder and processor settings
    if args.data:
        recipe = with_own_data(recipe, args.data, label_column=args.label_column, split=args.split,
                               exclude=args.exclude)
    elif args.label_column or args.split or args.exclude:
        raise ValueError("--label-column, --exclude and --split describe --data: give --data too")
    out = Path(args.output or Path("runs") / (recipe.name + ("-continued" if args.init else "")))
    command = command_line("pretrain", args.recipe, [("--data", args.data), ("--label-column", args.label_column),
                                                     ("--split", args.split), *[("--exclude", c) for c in args.exclude],
                                                     ("--init", args.init), ("--refit", args.refit or None),
                                                     *[("--set", s) for s in args.set]])
    summary = pretrain(recipe, out, resume=not args.no_resume, command=command, data=args.data, init=args.init,
                       refit=args.refit, report_to=args.report_to)
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_model
    from .recipe import load_recipe
    if args.data and args.recipe:
        raise ValueError("give --data (your labelled data) or --recipe (a recipe's evaluate section), not both")
    if args.label_column and not args.data:
        raise ValueError("--label-column names a column of --data: give --data too")
    settings = _evaluate_settings(args)
    if args.recipe:
        recipe = load_recipe(args.recipe, args.set)
    elif args.set and not args.data:                  # the model's recorded recipe, with the settings applied
        from .evaluate import recorded_recipe
        from .recipe import apply_overrides, parse_recipe
        recipe = parse_recipe(apply_overrides(recorded_recipe(args.model), args.set),
                              f"the recipe recorded by {args.model}")
    else:
        recipe = None
    report = evaluate_model(args.model, recipe, output_dir=args.output, device=args.device,
                            baseline=not args.no_baseline, num_workers=args.num_workers, data=args.data,
                            label_column=args.label_column, split=args.split, test_split=args.test_split,
                            seed=args.seed, label_fractions=args.label_fractions, seeds=args.seeds,
                            report_to=args.report_to, settings=settings)
    print(json.dumps(report, indent=2))
    return 0


EVALUATE_OWN_DATA = ("knn_k", "layers")          # what zoo evaluate --data reads of --set evaluate.*


def _evaluate_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``zoo evaluate``'s ``--set``: with ``--data``, the ``evaluate.*`` settings that apply to one's own data
    (:data:`EVALUATE_OWN_DATA`), parsed; any other key is refused, never silently ignored. Without ``--data`` they
    go to the recipe (``--recipe``'s or the model's recorded one), which validates them."""
    from .recipe import parse_assignments
    if not args.data:
        unread = [s.split("=", 1)[0] for s in args.set if not s.startswith("evaluate.")]
        if unread:
            raise ValueError(f"zoo evaluate does not read {unread}: it reads evaluate.* (the recipe's evaluate "
                             "section)")
        return {}
    values = parse_assignments(args.set, "--set")
    unread = [k for k in values if k.removeprefix("evaluate.") not in EVALUATE_OWN_DATA or "." not in k]
    if unread:
        raise ValueError(f"zoo evaluate --data does not read {unread}: it reads "
                         f"{', '.join('evaluate.' + k for k in EVALUATE_OWN_DATA)}")
    return {k.removeprefix("evaluate."): v for k, v in values.items()}


FINETUNE_FLAGS = ("steps", "lr", "batch_size", "mode", "top_layers", "layer_decay", "class_weights", "head_norm",
                  "eval_every", "patience", "test_fraction", "seed", "task")     # flags named as the settings they set


def _cmd_finetune(args: argparse.Namespace) -> int:
    from .evaluate import recorded_recipe
    from .finetune import finetune
    from .recipe import apply_overrides, load_recipe, parse_recipe
    read = ("finetune.",) if args.data else ("finetune.", "evaluate.")
    unread = [s.split("=", 1)[0] for s in args.set if not s.startswith(read)]
    if unread:
        hint = {k: "finetune." + k.split(".", 1)[-1] for k in unread if k.startswith("train.")}
        raise ValueError(f"this fine-tuning run does not read {unread}: it reads {', '.join(r + '*' for r in read)}"
                         + (f" (did you mean {sorted(hint.values())}?)" if hint else ""))
    from .finetune import check_setting_names
    check_setting_names([s.split("=", 1)[0].split(".", 1)[1] for s in args.set if s.startswith("finetune.")],
                        where="--set")                # a misspelt setting stops here, before any loading
    if args.recipe:
        recipe = load_recipe(args.recipe, args.set)
    else:
        recorded = recorded_recipe(args.model)
        recipe = parse_recipe(apply_overrides(recorded, args.set), f"the recipe recorded by {args.model}")
    settings = {key: getattr(args, key) for key in FINETUNE_FLAGS if getattr(args, key) is not None}
    name = recipe.name if not args.data else Path(args.data).name or recipe.name
    out = Path(args.output or Path("runs") / f"{name}-finetune")
    result = finetune(args.model, recipe, out, resume=not args.no_resume, device=args.device, settings=settings,
                      data=args.data, label_column=args.label_column, split=args.split, test_split=args.test_split,
                      repo_id=args.repo_id, baseline=not args.no_baseline, report_to=args.report_to)
    print(json.dumps(result, indent=2))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from zoo import AutoClassifier
    from zoo.classifier import CLASSIFIER_NAME
    model = Path(args.model)
    if model.is_dir() and not (model / CLASSIFIER_NAME).is_file() and (model / "config.json").is_file():
        raise ValueError(f"{model} is an encoder, not a fine-tuned classifier (no {CLASSIFIER_NAME}): fine-tune it "
                         f"first (zoo finetune {model} --data ...), or embed with zoo embed")
    clf = AutoClassifier.from_pretrained(args.model, runtime=args.runtime)
    entries = _inputs_to_predict(clf.processor, args)
    kept = [(n, ex) for n, ex, why in entries if why is None]
    out = iter(clf.predict([ex for _, ex in kept], names=[n for n, _ in kept], top_k=args.top_k) if kept else [])
    for name, _, why in entries:                   # every input in its order, a skipped one said where it stands
        if why is not None:
            print(json.dumps({"input": name, "skipped": why}) if args.json else f"{name}\tskipped: {why}")
            continue
        labels = next(out)
        if args.json:
            print(json.dumps({"input": name, "predictions": labels}))
        else:
            print(f"{name}\t" + "\t".join(f"{p['label']} {p['value']:.6g}" if "value" in p
                                           else f"{p['label']} {p['score']:.4f}" for p in labels))
    if len(kept) < len(entries):
        logging.getLogger("zoo").warning("%d of %d inputs could not be read and were skipped (--skip-bad)",
                                         len(entries) - len(kept), len(entries))
    if not kept:                                   # nothing predicted: a script must see it
        print(f"zoo predict: error: none of the {len(entries)} inputs could be read", file=sys.stderr)
        return 2
    return 0


def _inputs_to_predict(processor: Any, args: argparse.Namespace) -> list[tuple[str, Any, str | None]]:
    """Each input as ``(name, example, None)``; with ``--skip-bad`` an input the processor refuses (a bad cell, a
    corrupt file, a file that does not read) is ``(name, None, why)``, read once up front (window by window) instead
    of an error."""
    from zoo import BadExample, Unreadable
    entries: list[tuple[str, Any, str | None]] = []
    for path in args.inputs:
        for name, example in _listed(processor, path, args):
            why = None
            if isinstance(example, Unreadable):
                example, why = None, error_text(example.error, "predict")
            elif args.skip_bad:
                try:                           # window by window: a long input in bounded memory
                    for _ in processor.windows(example, name=name):
                        pass
                except BadExample as err:
                    why = error_text(err, "predict")
            entries.append((name, example, why))
    return entries


def _never_into_the_model(out: Path, model: str, inputs: list[str]) -> None:
    """``--output`` must not be an input, lie in the model's folder — a local one, or the Hub cache snapshot a Hub
    id resolves to — nor anywhere in a cache (:mod:`pipelines.guards`): it could overwrite a model's files."""
    from zoo.hub import CONFIG_NAME, resolve_file

    from .guards import refuse_output
    folder = Path(resolve_file(model, CONFIG_NAME)).parent
    refuse_output(out, "--output", inputs=[("the model folder", model), ("the model folder", folder),
                                           *[("the input", p) for p in inputs]], file_ok=out.suffix == ".safetensors")


NOTES_SHOWN = 20        # zoo embed: notes printed one by one (what a processor left out), then a count
SHARD_SIZE = 50_000     # zoo embed: inputs per shard file, one process
SHARD_SIZE_RANKS = 1_000  # ... under torchrun: the unit the processes share out (docs/command-line.md)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _fractions(text: str) -> list[float]:
    from .label_efficiency import parse_fractions
    try:
        return parse_fractions(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).split(": ", 1)[-1]) from None


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _seconds(text: str) -> float:
    """``--window``/``--hop``: seconds, > 0 and at most a week (``1e308`` overflowed; docs/reliability.md)."""
    from zoo.plugin import MAX_WINDOW_SECONDS
    value = _positive_float(text)
    if value > MAX_WINDOW_SECONDS:
        raise argparse.ArgumentTypeError(f"{text} seconds is beyond {MAX_WINDOW_SECONDS:g} (a week): a window "
                                         "longer than an input covers the whole input")
    return value


def _dataset_id(text: str) -> bool:
    """An input that is no local file or folder and does not look like a path: a Hugging Face dataset id (the rule
    of ``--data``, :func:`pipelines.data_spec.data_spec`)."""
    path = Path(text).expanduser()
    return not path.exists() and not path.suffix and not text.startswith((".", "/", "~"))


def _embed_inputs(args: argparse.Namespace, processor, job, count) -> Any:
    """The inputs in their one order — each file, a folder's files, a table's rows (or an event log's entities), a
    Hugging Face dataset's examples (streamed: ``ID[k]``) — as ``(place, name, example)`` for those this rank
    embeds now (``job.wanted``: its blocks not written yet); ``count.value`` is the number of inputs at the end."""
    from zoo import get_modality

    i = 0
    for path in args.inputs:
        if _dataset_id(path):
            if args.name_column:
                raise ValueError(f"--name-column names a table file's rows; {path} is a dataset id, whose examples "
                                 "are named ID[k]")
            modality = get_modality(processor.modality)
            stream = modality.load_data({"source": "hf", "path": path, "split": args.split or "train",
                                         "streaming": True})
            named = ((f"{path}[{k}]", rec[0]) for k, rec in enumerate(stream.records(0, 1, 0)))
        else:
            named = _listed(processor, path, args)
        for name, ex in named:
            if job.wanted(i, name):
                yield i, name, ex
            i += 1
    count.value = i


def _listed(processor: Any, path: str, args: argparse.Namespace) -> list[tuple[str, Any]]:
    """``path``'s named examples; with ``--skip-bad`` a file that does not read at all (a table with no rows, a
    damaged file) is one input, :class:`zoo.Unreadable`, that ``zoo embed``/``predict`` skip and count in its
    place."""
    from zoo import BadExample, Unreadable

    from .data_spec import named_inputs
    try:
        return named_inputs(processor, path, args.name_column)
    except BadExample as err:
        if not args.skip_bad:
            raise
        return [(str(path), Unreadable(err))]


def _embed_files(args: argparse.Namespace, processor, job, count) -> Any:
    """This rank's inputs to embed as a stream for DataLoader workers (each worker every ``parts``-th of them),
    read lazily; an example's label slot carries its place in the input list. What the processor leaves out of an
    example (older events) is said as it is read (in a worker or this process)."""
    from zoo import StreamSet, Unreadable

    class Files(StreamSet):
        def records(self, part: int, parts: int, epoch: int):
            cut = 0
            for j, (i, name, ex) in enumerate(_embed_inputs(args, processor, job, count)):
                if j % parts == part:
                    note = None if isinstance(ex, Unreadable) else processor.left_out(ex, name=name)
                    if note:
                        cut += 1
                        if cut <= NOTES_SHOWN:
                            print(f"note: {name}: {note}", flush=True)
                    yield ex, i, name
            if cut:
                print(f"note: {cut} input(s) embedded with part of them left out (see above; the first "
                      f"{min(cut, NOTES_SHOWN)} shown)", flush=True)
    return Files()


def _embed_windows(args: argparse.Namespace, encoder, processor, inputs, device) -> Any:
    """One block of rows per input of a windowed modality (``zoo.embedding.embed_long``): its windows,
    ``args.batch_size`` in flight; ``(place, rows, row names, input name, None)``, or with ``--skip-bad`` for an
    input that cannot be read ``(place, None, [], input name, why)``."""
    from zoo import BadExample, Unreadable
    from zoo.embedding import embed_long
    for i, name, ex in inputs:
        try:
            if isinstance(ex, Unreadable):
                raise ex.error
            res = embed_long(encoder, processor, ex, name=name, pooling=args.pooling, window=args.window,
                             hop=args.hop, batch_size=args.batch_size, device=device)
        except BadExample as err:
            if not args.skip_bad:
                raise
            yield i, None, [], name, str(err)
            continue
        if args.pooling == "mean" and len(res.spans) > 1:
            print(f"{name}: mean of {len(res.spans)} windows ({res.spans[0][1] - res.spans[0][0]:g}"
                  f"{res.unit} every {res.spans[1][0] - res.spans[0][0]:g}{res.unit}, weighted by length)",
                  flush=True)
        for note in res.notes:
            print(f"note: {note}", flush=True)
        yield i, res.embeddings, res.names, name, None


def _embed_job(args: argparse.Namespace, encoder, processor, folder: Path, ranks, device) -> Path | None:
    """Embed this rank's blocks of the inputs into ``folder`` (:mod:`pipelines.embed_job`: shards written
    atomically, a rerun resumes, rank 0 joins them in ``index.json``, returned; ``None`` on the other ranks)."""
    import multiprocessing

    from .embed_job import EmbedJob, job_fingerprint
    from .evaluate import iter_embeddings
    settings = {"shard_size": args.shard_size, "pooling": args.pooling, "window": args.window, "hop": args.hop,
                "runtime": args.runtime, "split": args.split}
    count = multiprocessing.Value("q", -1)         # the inputs' number, set by whichever process reads them all
    resumable = args.output is not None and Path(args.output).suffix != ".safetensors"

    def fingerprint() -> dict[str, Any]:       # hashes the model's files: only where a job can be resumed
        return job_fingerprint(args.model, args.inputs, settings) if resumable else {"temporary": True}
    with EmbedJob(folder, shard_size=args.shard_size, ranks=ranks, progress=True) as job:
        said = job.open(fingerprint, resume=not args.no_resume)
        if said:
            print(said, flush=True)
        skip = _skipper(job, encoder.dim)
        if processor.windowed:
            inputs = _embed_inputs(args, processor, job, count)
            for i, rows, names, name, why in _embed_windows(args, encoder, processor, inputs, device):
                if rows is None:
                    skip([why], [(i, name)])
                else:
                    job.add(i, rows, names, name)
        else:
            stream = _embed_files(args, processor, job, count)
            for emb, names, places in iter_embeddings(encoder, processor, stream, batch_size=args.batch_size,
                                                      device=device, num_workers=args.num_workers,
                                                      skip_bad=args.skip_bad, on_skip=skip):
                for r, (i, name) in enumerate(zip(places.tolist(), names)):
                    job.add(i, emb[r:r + 1], [name], name)
        index = job.finish(count.value)
        if index is not None and job.skipped:
            where = f"listed in {index}" if resumable else "said above"
            print(f"note: {job.skipped} of {count.value} input(s) could not be read and were skipped (--skip-bad; "
                  f"{where})", flush=True)
        if ranks.world > 1 or job.kept:
            who = f"rank {ranks.rank}/{ranks.world}: " if ranks.world > 1 else ""
            print(f"{who}embedded {job.embedded} input(s) into {job.written} new shard(s); {job.kept} shard(s) "
                  "already written were kept", flush=True)
        if index is not None and ranks.world > 1 and count.value <= args.shard_size * (ranks.world - 1):
            print(f"note: {count.value} input(s) in shards of {args.shard_size}: some of the {ranks.world} "
                  "processes had nothing to do (a smaller --shard-size shares the inputs out)", flush=True)
    return index


def _skipper(job: Any, dim: int) -> Any:
    """``--skip-bad``: each input that could not be read said in its place and recorded in its block (no rows)."""
    import torch

    def skip(messages: list[str], records: list[tuple[Any, str]]) -> None:
        for why, (i, name) in zip(messages, records):
            why = error_text(ValueError(why), "embed")
            print(f"{name}\tskipped: {why}", flush=True)
            job.add(int(i), torch.zeros(0, dim), [], name, skipped=why)
    return skip


def _cmd_embed(args: argparse.Namespace) -> int:
    """Embed files, folders, tables or streamed datasets. A windowed modality (audio, video) embeds each input
    window by window, whatever its length (one row per input with ``--pooling mean``, one per window with
    ``none``); the others batch whole examples through DataLoader workers and say what their processor left out
    (older events). Under ``torchrun`` the ranks share the inputs by blocks of ``--shard-size``; into a folder, a
    killed job resumes where it stopped (docs/command-line.md, "Embedding at scale")."""
    from safetensors.torch import save_file

    from .distributed import pick_device
    from .embed_job import ranks_from_env, recorded_shard_size
    from .evaluate import load_shards

    ranks = ranks_from_env()
    out = Path(args.output) if args.output else None
    to_folder = out is not None and out.suffix != ".safetensors"
    if args.shard_size is None:     # the resumed job's; else several processes share the inputs shard by shard
        recorded = recorded_shard_size(out) if to_folder and not args.no_resume else None
        args.shard_size = recorded or (SHARD_SIZE if ranks.world == 1 else SHARD_SIZE_RANKS)
    if ranks.world > 1 and not to_folder:
        raise ValueError(f"under torchrun (WORLD_SIZE={ranks.world}) --output must be a folder: each process writes "
                         "its shards there and index.json joins them")
    if args.no_resume and not to_folder:
        raise ValueError("--no-resume starts a job in an --output folder over: give --output FOLDER")
    if args.split and not any(_dataset_id(p) for p in args.inputs):
        raise ValueError("--split picks the split of a Hugging Face dataset input, and no input is one")
    encoder, processor = _embedding_model(args.model, args.runtime, args.modality)
    if out is not None:
        _never_into_the_model(out, args.model, args.inputs)
    if not processor.windowed and (args.pooling != "mean" or args.window is not None or args.hop is not None):
        raise ValueError(f"--pooling none, --window and --hop apply to windowed modalities (audio, video); a "
                         f"{processor.modality} example is embedded whole")
    device = pick_device(args.device, ranks.local_rank)
    encoder = encoder.to(device)
    with tempfile.TemporaryDirectory(prefix="zoo-embed-") as tmp:      # removed however the command ends
        folder = out if to_folder else Path(tmp)
        index = _embed_job(args, encoder, processor, folder, ranks, device)
        if index is None:                                                # not rank 0: its shards are written
            return 0
        emb, _, names = load_shards(index) if not to_folder else (None, None, [])
        if out is not None and not to_folder:
            out.parent.mkdir(parents=True, exist_ok=True)
            skipped = json.loads(index.read_text()).get("skipped_inputs") or []
            save_file({"embeddings": emb.contiguous()}, str(out), metadata={
                "names": json.dumps(names), **_space(encoder), **({"skipped": json.dumps(skipped)} if skipped else {})})
            print(f"wrote {tuple(emb.shape)} embeddings to {out}")
        elif out is not None:
            space = _space(encoder)
            if space:                               # a bound model's side: which space the shards are in
                (out / "bound.json").write_text(json.dumps(space) + "\n")
            meta = json.loads(index.read_text())
            print(f"wrote {meta['rows']} embeddings in {len(meta['shards'])} shard(s) to {out} (index.json)")
    if emb is not None:
        for name, row in zip(names[:20], emb):
            print(f"{name}\t[{', '.join(f'{v:.4f}' for v in row[:6].tolist())}{', …' if len(row) > 6 else ''}]"
                  f"\tdim={len(row)}")
        if len(names) > 20:
            print(f"… {len(names) - 20} more row(s)" + (f" in {out}" if out is not None else " (--output FILE keeps "
                                                                                           "them all)"))
    return 0


def _space(encoder: Any) -> dict[str, str]:
    """For a bound model's side (``--modality``): the side and its signature in the shared space, recorded with the
    vectors so that ``zoo search`` refuses vectors of another side or model; ``{}`` for any other encoder."""
    from zoo.bound import SharedSpaceEncoder
    if not isinstance(encoder, SharedSpaceEncoder):
        return {}
    return {"bound_side": encoder.side_name, "bound_signature": encoder.signature}


def _embedding_model(model: str, runtime: str | None, modality: str | None) -> tuple[Any, Any]:
    """What ``zoo embed`` runs: the model's encoder and processor; a bound model's side (``--modality``) with its
    projection, so that the rows are that side's vectors in the shared space."""
    from zoo import AutoEncoder, AutoProcessor
    from zoo.bound import BoundModel, SharedSpaceEncoder
    loaded = AutoEncoder.from_pretrained(model, runtime=runtime)
    if isinstance(loaded, BoundModel):
        if modality is None:
            raise ValueError(f"{model} is a bound model of {loaded.sides}: --modality names the side to embed (into "
                             "the shared space)")
        return SharedSpaceEncoder(loaded, modality), loaded.processors[modality]
    if modality is not None and modality != loaded.modality:
        raise ValueError(f"--modality {modality}: {model} is a {loaded.modality} model (--modality picks a side of a "
                         "bound model)")
    return loaded, AutoProcessor.from_pretrained(model)


def _cmd_card(args: argparse.Namespace) -> int:
    from zoo.cards import write_card
    path = write_card(args.folder, repo_id=args.repo_id)
    print(f"wrote {path}")
    return 0


def _cmd_publish(args: argparse.Namespace) -> int:
    from zoo.hub import push_to_hub
    from zoo.publish import check_publishable
    folder = Path(args.folder)
    try:                                  # the same checks with --dry-run: an id, a model that loads, a card
        files = check_publishable(folder, args.repo_id)
    except (ValueError, FileNotFoundError) as err:
        print(f"publish: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(f"would upload to {args.repo_id}: {', '.join(files)} (the card re-rendered for {args.repo_id})")
        return 0
    from zoo.cards import write_card
    write_card(folder, repo_id=args.repo_id)          # the card's name and "How to use" name the repo it goes to
    info = push_to_hub(folder, args.repo_id, private=args.private, revision=args.revision)
    print(f"uploaded {', '.join(files)} to {args.repo_id}: {getattr(info, 'commit_url', info)}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    import shutil

    from zoo.auto import converted_folder

    from .guards import refuse_output
    refuse_output(args.output, "OUT", inputs=[("the checkpoint", args.source)], new_folder=True)
    if Path(args.source).is_file():                 # a checkpoint file (Point-MAE's .pth): its family is named
        return _convert_file(args)
    folder = converted_folder(args.source)
    if folder is None:
        raise ValueError(f"{args.source} is already a zoo model (config.json has zoo_format): nothing to convert")
    shutil.copytree(folder, args.output, dirs_exist_ok=True)
    print(f"converted {args.source} into {args.output}")
    return 0


def _convert_file(args: argparse.Namespace) -> int:
    from zoo.auto import converters

    from .recipe import parse_assignments
    families = converters()
    if args.model_type not in families:
        raise ValueError(f"{args.source} is a checkpoint file: name its family with --model-type (one of "
                         f"{sorted(families)})")
    options = parse_assignments(args.option, "--option")
    name, convert = families[args.model_type]
    convert(args.source, args.output, **options)
    print(f"converted {args.source} ({args.model_type}) into {args.output} [{name}]")
    return 0


def _set_arg(s: argparse.ArgumentParser) -> None:
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set train.steps=10 (repeatable)")


def _recipe_args(s: argparse.ArgumentParser) -> None:
    _set_arg(s)
    s.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")


def _report_to(s: argparse.ArgumentParser) -> None:
    """``--report-to``: docs/command-line.md, "Experiment trackers"."""
    from .trackers import add_report_to
    add_report_to(s)


def _add_list(sub: Any) -> None:
    s = sub.add_parser("list", help="installed modalities, recipes and zoo entries")
    s.set_defaults(func=_cmd_list)


def _add_pretrain(sub: Any) -> None:
    s = sub.add_parser("pretrain", help="pretrain an encoder from a recipe (resumes a killed run)")
    s.add_argument("recipe", help="recipe name (see `zoo list`) or YAML path")
    s.add_argument("--data", help="your own (unlabelled) data instead of the recipe's: a folder of files, a "
                                  "CSV/parquet table or a Hugging Face dataset id")
    s.add_argument("--label-column", help="a column of --data that is a label (never an input; left out)")
    s.add_argument("--exclude", action="append", default=[], metavar="COLUMN",
                   help="a column of --data that is not an input, e.g. an id (repeatable)")
    s.add_argument("--include", action="append", default=[], metavar="COLUMN",
                   help="a column to keep although all its values differ (else left out as an id; repeatable)")
    s.add_argument("--split", help="the split of --data to pretrain on (a folder's subfolder, a dataset split)")
    s.add_argument("--init", metavar="MODEL",
                   help="continue pretraining from this model (a zoo folder or Hub id, or a transformers checkpoint "
                        "`zoo convert` reads): its encoder, its pretraining heads where it has them, its processor")
    s.add_argument("--refit", action="store_true", help="with --init: fit the processor on the new data instead")
    s.add_argument("--output", help="run folder (default: runs/<recipe name>)")
    _set_arg(s)
    s.add_argument("--no-resume", action="store_true", help="start over even if checkpoints exist")
    _report_to(s)
    s.set_defaults(func=_cmd_pretrain)


def _add_evaluate(sub: Any) -> None:
    s = sub.add_parser("evaluate", help="linear probe and k-NN of a frozen encoder (vs random init)")
    s.add_argument("model", help="model folder or Hub id")
    s.add_argument("--recipe", help="recipe with the evaluate section (default: the one the model records)")
    s.add_argument("--data", help="your labelled data, as zoo finetune --data reads it: a folder with one subfolder "
                                  "per class, a CSV/parquet table, a graph folder, or a Hugging Face dataset id")
    s.add_argument("--label-column", help="the label column of a table or dataset")
    s.add_argument("--split", help="the split of --data the probes train on (default: train)")
    s.add_argument("--test-split", help="the test split (default: a folder's test/, else a seeded 20%% held out)")
    s.add_argument("--seed", type=int, default=0, help="seeds the held-out split (default 0)")
    s.add_argument("--output", help="where to write eval_results.json and the embedding map")
    s.add_argument("--no-baseline", action="store_true",
                   help="skip the comparisons: the same architecture at random init and the modality's hand-made "
                        "baselines (in --label-fractions too)")
    s.add_argument("--num-workers", type=_count, default=0, help="DataLoader workers that read and process (default 0)")
    s.add_argument("--label-fractions", type=_fractions, metavar="F,F,...",
                   help="label-efficiency curves: the probe trained on each stratified fraction of the labelled "
                        "training examples (e.g. 0.01,0.05,0.1,0.5,1), pretrained vs random init vs the hand-made "
                        "baselines, a table and label_efficiency.png on the card")
    s.add_argument("--seeds", type=_positive_int, default=3, help="seeds per fraction (default 3)")
    _recipe_args(s)
    _report_to(s)
    s.set_defaults(func=_cmd_evaluate)


def _add_finetune(sub: Any) -> None:
    s = sub.add_parser("finetune", help="fine-tune an encoder into a classifier (your own data with --data)")
    s.add_argument("model", help="model folder or Hub id")
    s.add_argument("recipe", nargs="?", help="recipe whose evaluate section holds the labelled data and whose "
                                             "finetune section the settings (default: the one the model records)")
    s.add_argument("--data", help="your labelled data: a folder with one subfolder per class, a CSV/parquet "
                                  "table (with --label-column) or a Hugging Face dataset id")
    s.add_argument("--label-column", help="the label column of a table or dataset")
    s.add_argument("--split", help="the training split of a dataset (default: train)")
    s.add_argument("--test-split", help="the test split (default: a folder's test/, else a held-out share)")
    s.add_argument("--test-fraction", type=float, help="held out for testing when there is no test split (0.2)")
    s.add_argument("--task", choices=["auto", "classification", "regression"],
                   help="regression: a numeric target (auto: a table column of numbers with more than 20 values)")
    s.add_argument("--mode", choices=["full", "partial", "frozen"], help="what trains (default: full)")
    s.add_argument("--top-layers", type=_positive_int, help="partial: how many layer groups from the top train")
    s.add_argument("--layer-decay", type=float, help="layer-wise learning-rate decay (1.0: off)")
    s.add_argument("--class-weights", choices=["none", "balanced"])
    s.add_argument("--head-norm", action="store_true", default=None,
                   help="the head is LayerNorm(mean of the tokens before the encoder's final norm) then linear: "
                        "VideoMAE's fine-tuning head, which zoo export --format transformers needs for video")
    s.add_argument("--eval-every", type=_count, help="validate every N steps; the best checkpoint is kept")
    s.add_argument("--patience", type=_count, help="validations without improvement before stopping early")
    s.add_argument("--steps", type=_positive_int)
    s.add_argument("--lr", type=float)
    s.add_argument("--batch-size", type=_positive_int)
    s.add_argument("--seed", type=int, help="seeds the splits, the head and the order")
    s.add_argument("--repo-id", help="the name the classifier's card gives it")
    s.add_argument("--no-baseline", action="store_true",
                   help="skip the modality's hand-made baselines (by default scored on the same split, beside the "
                        "result)")
    s.add_argument("--output", help="run folder (default: runs/<data or recipe>-finetune)")
    s.add_argument("--no-resume", action="store_true", help="start over even if checkpoints exist")
    _recipe_args(s)
    _report_to(s)
    s.set_defaults(func=_cmd_finetune)


def _add_predict(sub: Any) -> None:
    s = sub.add_parser("predict", help="labels and probabilities from a fine-tuned classifier")
    s.add_argument("model", help="classifier folder or Hub id (from zoo finetune)")
    s.add_argument("inputs", nargs="+", help="input files (a table gives one prediction per row or entity)")
    s.add_argument("--top-k", type=_positive_int, default=1)
    s.add_argument("--json", action="store_true", help="one JSON line per input")
    s.add_argument("--skip-bad", action="store_true",
                   help="an input that cannot be read (a bad cell, a corrupt file) is skipped and said in its place "
                        "instead of stopping the command")
    _name_column_arg(s)
    _runtime_arg(s)
    s.set_defaults(func=_cmd_predict)


def _add_embed(sub: Any) -> None:
    s = sub.add_parser("embed", help="embed input files, folders, tables or datasets with a model (several "
                                     "processes with torchrun; resumes a killed job)")
    s.add_argument("model", help="model folder or Hub id")
    s.add_argument("inputs", nargs="+", help="input files, folders of files, table files (a row or entity each) or "
                                             "Hugging Face dataset ids (streamed), embedded in this order")
    s.add_argument("--output", help="a .safetensors file, or a folder for sharded output (any data size; several "
                                    "processes; a rerun resumes)")
    s.add_argument("--shard-size", type=_positive_int, default=None,
                   help=f"inputs per shard file (with --pooling none, every window of them): what the processes of "
                        f"torchrun share out and a killed job resumes from (default: a resumed job's, else "
                        f"{SHARD_SIZE}, under torchrun {SHARD_SIZE_RANKS})")
    s.add_argument("--no-resume", action="store_true",
                   help="with --output FOLDER: remove an earlier job's shards there and start over")
    s.add_argument("--split", help="the split of a Hugging Face dataset input (default: train)")
    s.add_argument("--skip-bad", action="store_true",
                   help="an input that cannot be read (a corrupt file, a bad cell) is skipped, said in its place and "
                        "counted in index.json, instead of stopping the job")
    _name_column_arg(s)
    s.add_argument("--num-workers", type=_count, default=0, help="DataLoader workers that read and process "
                                                                "(examples that are not windowed)")
    s.add_argument("--batch-size", type=_positive_int, default=64,
                   help="examples, or windows of a long input, per forward pass (the windows in memory)")
    s.add_argument("--pooling", choices=("mean", "none"), default="mean",
                   help="audio, video: one row per input, the windows' mean weighted by their length (mean), or "
                        "one row per window named PATH[START-END] (none)")
    s.add_argument("--window", type=_seconds, help="audio, video: window length in seconds (default: the "
                                                          "processor's, the length the model was trained on)")
    s.add_argument("--hop", type=_seconds, help="audio, video: seconds between window starts (default: "
                                                       "half a window)")
    s.add_argument("--device", default="cpu")
    s.add_argument("--modality", help="a bound model (zoo bind): the side to embed, into the shared space")
    _runtime_arg(s)
    s.set_defaults(func=_cmd_embed)


def _name_column_arg(s: argparse.ArgumentParser) -> None:
    from .cli_bind import name_column_arg
    name_column_arg(s)


def _runtime_arg(s: argparse.ArgumentParser) -> None:
    s.add_argument("--runtime", choices=("onnx", "torch"), default=None,
                   help="an exported model (zoo export): its ONNX graph (the default) or the weights beside it")


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export_model, export_summary
    from .guards import refuse_output
    refuse_output(args.output, "OUT", inputs=[("the model folder", args.model),
                                              *[("the input", p) for p in args.example]], new_folder=True)
    block = export_model(args.model, args.output, fmt=args.format, quantize=args.quantize, inputs=args.example)
    kind = "classifier" if block["classifier"] else "encoder"
    if args.format == "exported-program":
        print(f"exported the {kind} {args.model} to {args.output}/{block['file']} (torch.export program); "
              f"{export_summary(block)}")
        return 0
    if args.format != "onnx":
        print(f"exported the {kind} {args.model} to {args.output} ({args.format})")
        return 0
    print(f"exported the {kind} {args.model} to {args.output}/{block['file']} (opset {block['opset']}, "
          f"{block['exporter']} exporter{', int8' if block['quantize'] else ''}); {export_summary(block)}")
    return 0


def _add_export(sub: Any) -> None:
    s = sub.add_parser("export", help="export an encoder or classifier to ONNX (run by ONNX Runtime)")
    s.add_argument("model", help="model or classifier folder, or Hub id")
    s.add_argument("output", metavar="OUT", help="a new folder: model.onnx (or model.pt2), config.json, "
                                                  "preprocessor.json, card")
    s.add_argument("--format", choices=("onnx", "exported-program", "transformers"), default="onnx",
                   help="onnx (every family), exported-program (a torch.export program, model.pt2, with no "
                        "pickle; not for recurrent encoders), or transformers (families that came from it: wav2vec "
                        "2.0, HuBERT, "
                        "data2vec-audio, WavLM, VideoMAE): that family's folder, *ForSequenceClassification or "
                        "VideoMAEForVideoClassification (fine-tuned with --head-norm) for a classifier")
    s.add_argument("--quantize", choices=("int8",), default=None,
                   help="int8 dynamic quantisation (only for families where it keeps the probe within a point)")
    s.add_argument("--example", nargs="+", default=[], metavar="FILE",
                   help="input files to trace and check the export on (default: the modality's sample data)")
    s.set_defaults(func=_cmd_export)


def _add_convert(sub: Any) -> None:
    s = sub.add_parser("convert", help="import a public checkpoint (wav2vec2, hubert, data2vec-audio, wavlm, "
                                                              "videomae, point-mae)")
    s.add_argument("source", help="a transformers folder (config.json + model.safetensors), a Hub id, or a "
                                  "checkpoint file with --model-type (e.g. Point-MAE's pretrain.pth)")
    s.add_argument("--model-type", help="the family of a checkpoint file (e.g. point-mae)")
    s.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a converter setting, e.g. --option heads=6 --option num_points=2048 (repeatable)")
    s.add_argument("output", help="zoo model folder to write")
    s.set_defaults(func=_cmd_convert)


def _add_card(sub: Any) -> None:
    s = sub.add_parser("card", help="(re)write the model card README.md of a model folder")
    s.add_argument("folder")
    s.add_argument("--repo-id", help="name to show in the card (default: the folder name)")
    s.set_defaults(func=_cmd_card)


def _add_publish(sub: Any) -> None:
    s = sub.add_parser("publish", help="upload a model folder to the Hugging Face Hub")
    s.add_argument("folder")
    s.add_argument("--repo-id", required=True)
    s.add_argument("--revision")
    s.add_argument("--private", action="store_true")
    s.add_argument("--dry-run", action="store_true", help="check the folder and list what would go up")
    s.set_defaults(func=_cmd_publish)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zoo", description="ssl-zoo: self-supervised encoders for non-image data.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from .cli_bind import add_bind, add_search
    for add in (_add_list, _add_pretrain, _add_evaluate, _add_finetune, _add_predict, _add_embed, add_bind, add_search,
                _add_convert, _add_export, _add_card, _add_publish):
        add(sub)
    return p


def quiet_dependencies() -> None:
    """At an entry point (``zoo``, the demo): silence what dependencies say that is not about the user's input —
    torch-geometric's use of the deprecated ``torch.jit.script``, audioread's import of ``sunau``, open3d's
    writer notes, ``datasets``' progress bars (ours report progress). Library code never filters globally."""
    import os
    import warnings
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r"'(sunau|aifc|audioop)' is deprecated", category=DeprecationWarning)
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning:torch.jit._script")   # DataLoader workers too


class _Stderr(logging.Handler):
    """Messages of ssl-zoo's own loggers (what a run took from where, conversions, collapse alarms) on stderr,
    the stream looked up when a message is written, on a line of its own (``tqdm.write`` moves a progress bar that
    is being drawn out of the way, so an alarm never lands on the bar's line)."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm
        tqdm.write(self.format(record), file=sys.stderr)


def show_messages() -> None:
    """At the ``zoo`` entry point: INFO and above of the ``zoo``, ``pipelines`` and ``modalities`` loggers."""
    for name in ("zoo", "pipelines", "modalities"):
        log = logging.getLogger(name)
        if not any(isinstance(h, _Stderr) for h in log.handlers):
            log.addHandler(_Stderr())
        log.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    quiet_dependencies()
    show_messages()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as err:
        print(f"zoo {args.command}: error: {error_text(err, args.command, stopped=True)}", file=sys.stderr)
        return 2


def error_text(err: BaseException, command: str, *, stopped: bool = False) -> str:
    """What the command line prints of an error: a KeyError's text without the quotes ``str`` adds, and the
    skip setting of the command at hand (a processor's message says ``train.skip_bad``; fine-tuning reads
    ``finetune.skip_bad``), named where an unreadable example stopped pretraining or fine-tuning; ``stopped``: the
    error stopped ``zoo embed``/``predict``, whose ``--skip-bad`` is then named."""
    import re
    text = err.args[0] if isinstance(err, KeyError) and len(err.args) == 1 and isinstance(err.args[0], str) \
        else str(err)
    if command in ("pretrain", "finetune"):
        setting = f"{'train' if command == 'pretrain' else 'finetune'}.skip_bad"
        text = text.replace("train.skip_bad", setting)
        if type(err).__name__ == "BadExample" and setting not in text:
            text += f" (--set {setting}=true skips an example that cannot be read, and counts it)"
        return text
    if command in ("predict", "embed"):
        if not stopped:         # a skipped input's reason: no advice to pass the --skip-bad it was given
            return re.sub(r" \(train\.skip_bad: true skips [^)]*\)|; train\.skip_bad: true skips [^)]*", "", text)
        text = re.sub(r"train\.skip_bad: true skips", "--skip-bad skips", text)
        if type(err).__name__ == "BadExample" and "--skip-bad" not in text:
            text += " (--skip-bad skips an input that cannot be read and goes on)"
    return text


if __name__ == "__main__":
    sys.exit(main())
