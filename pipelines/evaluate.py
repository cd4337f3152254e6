"""The evaluation harness shared by every modality: frozen-encoder linear probe and k-NN, plus an
embedding map coloured by label."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from zoo import Encoder, ExampleSet, Processor, StreamSet
from zoo.cards import COMPARISON_HEADING

from .baseline import EVALUATE_REMEDIES, verdict
from .data import iter_batches, iter_records, label_tensor
from .labelled import check_evaluation_labels
from .probes import knn_accuracy, linear_probe
from .recipe import Recipe, parse_recipe
from .report import comparison_markdown, embedding_map, protocol_markdown, record_evaluation
from .shards import load_shards, write_shards

__all__ = ["embed", "iter_embeddings", "embed_shards", "write_shards", "load_shards",
           "linear_probe", "knn_accuracy", "embedding_map", "probe_report", "layer_probes",
           "evaluate_model", "label_efficiency"]

@torch.no_grad()
def iter_embeddings(encoder: Encoder, processor: Processor, data: ExampleSet | StreamSet | Sequence[Any], *,
                    batch_size: int = 64, names: Sequence[str] | None = None, layers: bool = False,
                    device: torch.device | str = "cpu", num_workers: int = 0, skip_bad: bool = False,
                    on_skip: Any = None
                    ) -> Iterator[tuple[torch.Tensor | list[torch.Tensor], list[str], torch.Tensor | None]]:
    """Embeddings batch by batch — ``(pooled [B, D] or one [B, D] per layer, names, labels or None)`` — with the
    examples read, processed and collated in ``num_workers`` DataLoader workers: memory holds a few batches. A
    processor that ``pools_windows`` (audio) gives every example whole (:func:`window_embeddings`). ``skip_bad``:
    an example that cannot be read is left out, and ``on_skip`` hears of it (:func:`pipelines.data.iter_batches`)."""
    from zoo.layers import masked_mean
    if not isinstance(data, (ExampleSet, StreamSet)):
        data = ExampleSet(data, None, names)
    encoder = encoder.to(device).eval()
    if processor.pools_windows():
        yield from window_embeddings(encoder, processor, data, batch_size=batch_size, layers=layers, device=device)
        return
    for batch in iter_batches(data, processor, batch_size=batch_size, num_workers=num_workers, skip_bad=skip_bad,
                              on_skip=on_skip):
        names_b, labels = batch.pop("_names"), batch.pop("labels", None)
        batch.pop("_skipped", None)
        out = encoder({k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}, return_hidden=layers)
        if layers:
            yield [masked_mean(h, out.padding_mask).float().cpu() for h in out.hidden], names_b, labels
        else:
            yield out.pooled.float().cpu(), names_b, labels


@torch.no_grad()
def window_embeddings(encoder: Encoder, processor: Processor, data: ExampleSet | StreamSet, *, batch_size: int = 64,
                      layers: bool = False, device: torch.device | str = "cpu"
                      ) -> Iterator[tuple[torch.Tensor | list[torch.Tensor], list[str], torch.Tensor | None]]:
    """:func:`iter_embeddings` for a processor that ``pools_windows``: each example's windows encoded ``batch_size``
    at a time, their pooled rows (with ``layers``: every hidden state's mean-pooled rows) averaged weighted by the
    windows' length (``zoo.embedding.window_means``; docs/architecture.md, "Long inputs"), read in this process."""
    from zoo.embedding import window_means
    from zoo.layers import masked_mean

    def rows(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = encoder(batch, return_hidden=layers)
        if layers:
            return torch.stack([masked_mean(h, out.padding_mask) for h in out.hidden], dim=1).float()
        return out.pooled.float()
    for chunk in iter_records(data, batch_size):
        examples, labels, names = zip(*chunk)
        x = window_means(rows, processor, list(examples), names=list(names), batch_size=batch_size, device=device)
        yield (list(x.unbind(1)) if layers else x), list(names), label_tensor(labels)


def embed(encoder: Encoder, processor: Processor, examples: ExampleSet | StreamSet | Sequence[Any], *,
          batch_size: int = 64, names: Sequence[str] | None = None, layers: bool = False,
          device: torch.device | str = "cpu", num_workers: int = 0) -> torch.Tensor | list[torch.Tensor]:
    """Pooled embeddings ``[N, D]`` of raw examples (with ``layers``: one ``[N, D]`` per layer, mean-pooled
    over the non-padding tokens of every hidden state)."""
    parts = [e for e, _, _ in iter_embeddings(encoder, processor, examples, batch_size=batch_size, names=names,
                                              layers=layers, device=device, num_workers=num_workers)]
    if not parts:
        raise ValueError("nothing to embed: the data holds no examples (or every one was skipped)")
    if layers:
        return [torch.cat(x) for x in zip(*parts)]
    return torch.cat(parts)


def embed_shards(encoder: Encoder, processor: Processor, data: ExampleSet | StreamSet | Sequence[Any],
                 out_dir: str | Path, *, shard_size: int = 50_000, batch_size: int = 64,
                 names: Sequence[str] | None = None, device: torch.device | str = "cpu", num_workers: int = 0,
                 progress: bool = False) -> Path:
    """Embed a data set of any size into ``out_dir/embeddings-00000.safetensors, …`` (``embeddings [n, D]``,
    ``labels [n]`` when labelled; names in the metadata) and ``index.json``; returns ``index.json``."""
    rows = iter_embeddings(encoder, processor, data, batch_size=batch_size, names=names, device=device,
                           num_workers=num_workers)
    return write_shards(rows, out_dir, shard_size=shard_size, progress=progress)


def _split_embeddings(encoder: Encoder, processor: Processor, data: ExampleSet | StreamSet, out: Path | None,
                      split: str, *, device: str, num_workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings and labels of one split, streamed into shards under ``out/embeddings/<split>`` (or in memory
    without ``out``); labels travel with the processed examples."""
    if out is None:
        parts = list(iter_embeddings(encoder, processor, data, device=device, num_workers=num_workers))
        x, y = torch.cat([p[0] for p in parts]), [p[2] for p in parts]
        labels = torch.cat(y) if all(v is not None for v in y) else None
    else:
        x, labels, _ = load_shards(embed_shards(encoder, processor, data, out / "embeddings" / split, device=device,
                                                num_workers=num_workers))
    if labels is None:
        raise ValueError(f"evaluation needs labelled {split} data")
    return x, labels


def probe_report(encoder: Encoder, processor: Processor, train: ExampleSet | StreamSet, test: ExampleSet | StreamSet,
                 *, knn_k: int = 20, png: str | Path | None = None, title: str = "", device: str = "cpu",
                 shards: str | Path | None = None, num_workers: int = 0,
                 label_names: Sequence[str] | None = None, keep: dict[str, Any] | None = None) -> dict[str, float]:
    """Linear-probe and k-NN accuracy of a frozen encoder on a labelled train/test pair (embeddings written in
    shards under ``shards`` when given; kept in ``keep`` as ``features`` and ``labels`` when given)."""
    out = Path(shards) if shards is not None else None
    tr, ytr = _split_embeddings(encoder, processor, train, out, "train", device=device, num_workers=num_workers)
    te, yte = _split_embeddings(encoder, processor, test, out, "test", device=device, num_workers=num_workers)
    if keep is not None:
        keep.update(features=(tr, te), labels=(ytr.tolist(), yte.tolist()))
    report = {"linear_probe": linear_probe(tr, ytr.tolist(), te, yte.tolist()),
              "knn": knn_accuracy(tr, ytr.tolist(), te, yte.tolist(), knn_k)}
    if png is not None:
        embedding_map(te, yte.tolist(), png, title=title, label_names=label_names or test.label_names)
    return report


def layer_probes(encoder: Encoder, processor: Processor, train: ExampleSet | StreamSet,
                 test: ExampleSet | StreamSet, *, device: str = "cpu", num_workers: int = 0) -> list[float]:
    """Linear-probe accuracy of every hidden state (0 = the Transformer's input), mean-pooled."""
    def run(data: ExampleSet | StreamSet) -> tuple[list[torch.Tensor], list[int]]:
        parts = list(iter_embeddings(encoder, processor, data, layers=True, device=device, num_workers=num_workers))
        return [torch.cat(x) for x in zip(*[p[0] for p in parts])], torch.cat([p[2] for p in parts]).tolist()
    (tr, ytr), (te, yte) = run(train), run(test)
    return [linear_probe(a, ytr, b, yte) for a, b in zip(tr, te)]


def _as_recipe(recipe: Recipe | dict[str, Any]) -> Recipe:
    return recipe if isinstance(recipe, Recipe) else parse_recipe(recipe, f"recipe {recipe.get('name')!r}")


def recorded_recipe(model: str | Path) -> dict[str, Any]:
    """The recipe a model was trained with: the run folder's own record (``recipe.json``, local paths) first, else
    the portable one in ``config.json``. A converted public checkpoint records none: its modality and architecture
    make a recipe with the defaults (what ``zoo finetune --data`` needs)."""
    from zoo.auto import zoo_source
    from zoo.hub import load_config
    source, hub_kwargs = zoo_source(model, {})
    config = load_config(source, **hub_kwargs)
    local = Path(model).parent / "recipe.json" if Path(model).is_dir() else None
    recorded = config.get("pretraining", {}).get("recipe")
    as_run = json.loads(local.read_text()) if local is not None and local.is_file() else None
    if as_run and recorded and as_run.get("name") == recorded.get("name"):
        recorded = as_run
    if not recorded and config.get("pretraining", {}).get("converted_from"):
        origin = str(config["pretraining"]["converted_from"]).rstrip("/").split("/")[-1]
        recorded = {"name": origin, "modality": config["modality"], "architecture": config["architecture"]}
    if not recorded:
        raise ValueError(f"{model} records no recipe: name one")
    return recorded


def _own_data(modality: Any, processor: Processor, data: str, label_column: str | None, split: str | None,
              test_split: str | None, seed: int, model: str | Path, settings: dict[str, Any] | None = None
              ) -> tuple[ExampleSet | StreamSet, ExampleSet | StreamSet, dict[str, Any], str]:
    """``zoo evaluate --data``: the labelled train and test sets from one's own data, read as ``zoo finetune
    --data`` reads them (a folder's ``test/``, ``--test-split``, else a seeded stratified 20% held out), the
    evaluation spec naming them with ``settings`` (``--set evaluate.*``), and the model's name for the card."""
    from .finetune import FinetuneSettings
    from .labelled import load_labelled
    labelled = load_labelled(modality, processor, FinetuneSettings(validation_fraction=0.0), seed, data=data,
                             label_column=label_column, split=split, test_split=test_split,
                             skip_setting=None)      # empty label cells: left out and counted in a warning
    if labelled.task != "classification":
        raise ValueError(f"--label-column {label_column}: zoo evaluate probes classes (linear probe, k-NN); for a "
                         f"numeric target fine-tune a regressor (zoo finetune MODEL --data {data} --task regression)")
    spec = {"dataset": labelled.description, "dataset_name": labelled.description, **(settings or {})}
    return labelled.train, labelled.test, spec, model_name(model)


def model_name(model: str | Path) -> str:
    """A model's name for titles: a Hub id as it is, a folder by its name (a run's ``model/`` folder by its run's)."""
    path = Path(str(model))
    if not path.is_dir():
        return str(model)
    path = path.resolve()
    return path.parent.name if path.name == "model" and path.parent.name else path.name


def _hand_made(modality: Any, processor: Processor, train: ExampleSet, test: ExampleSet, k: int,
               keep: dict[str, Any] | None = None) -> dict[str, Any]:
    """Each hand-made baseline of the modality (pipelines/baseline.py) probed as the encoder is (its features kept
    in ``keep["baselines"]`` when given)."""
    out: dict[str, Any] = {}
    for name, features in modality.baselines.items():
        # the model's own fitted processor: train and test encoded alike (vocabularies, statistics)
        tr, te = features(train.examples, processor), features(test.examples, processor)
        if tr is None or te is None:                   # not for these examples (e.g. graph- vs node-level)
            continue
        if keep is not None:
            keep.setdefault("baselines", {})[name] = (torch.as_tensor(tr).float(), torch.as_tensor(te).float())
        out[name] = {"linear_probe": linear_probe(tr, train.labels, te, test.labels),
                     "knn": knn_accuracy(tr, train.labels, te, test.labels, k)}
    return out


def _counts_and_metrics(report: dict[str, Any], embeddings: Path, k: int) -> list[tuple[str, float]]:
    """The examples each split embedded (``report["train_examples"]``, ``…["test_examples"]``), the k-NN's ``k``
    (``report["knn_k"]``) and the card's metrics of a probe report."""
    for part in ("train", "test"):
        report[f"{part}_examples"] = json.loads((embeddings / part / "index.json").read_text())["rows"]
    report["knn_k"] = k
    return [("linear probe accuracy", report["pretrained"]["linear_probe"]),
            (f"{k}-NN accuracy", report["pretrained"]["knn"])]


def _compare(report: dict[str, Any], encoder: Encoder, processor: Processor, modality: Any,
             train: ExampleSet | StreamSet, test: ExampleSet | StreamSet, k: int, device: str,
             num_workers: int) -> dict[str, Any]:
    """Beside the encoder's probes: the same architecture at random init, the hand-made baselines, the verdict.
    Returns what they computed (the random init's embeddings, the baselines' features) for reuse."""
    keep: dict[str, Any] = {}
    torch.manual_seed(0)
    random_enc = type(encoder)(encoder.config)
    report["random_init"] = probe_report(random_enc, processor, train, test, knn_k=k, device=device,
                                         num_workers=num_workers, keep=keep)
    if isinstance(train, ExampleSet) and isinstance(test, ExampleSet):   # hand-made features need random access
        report["baselines"] = _hand_made(modality, processor, train, test, k, keep)
    _judge(report, "linear_probe", "linear-probe accuracy", "streamed data or no hand-made baseline for this modality")
    _against_random_init(report, "linear_probe")
    return keep


def _against_random_init(report: dict[str, Any], key: str) -> None:
    """Said when the same architecture at random init probes better than the pretrained encoder (pretraining made
    the features worse for this task): ``report["random_init_ahead"]`` and a warning."""
    pre, rnd = report["pretrained"].get(key), report.get("random_init", {}).get(key)
    if pre is None or rnd is None or rnd <= pre:
        return
    report["random_init_ahead"] = (f"the same architecture at random init scores {key.replace('_', ' ')} {rnd:.3f}, "
                                   f"above the pretrained encoder's {pre:.3f}: on this data pretraining made the "
                                   "features worse (pretrain longer, on data closer to this task, or from a public "
                                   "checkpoint)")
    logging.getLogger(__name__).warning(report["random_init_ahead"])


def _judge(report: dict[str, Any], key: str, metric: str, none: str) -> None:
    """``report["verdict"]``: the encoder's ``key`` against the same figure of each of ``report["baselines"]``
    (:func:`~pipelines.baseline.verdict`); ``none`` says why there is no baseline when there is none."""
    scores = {n: r[key] for n, r in report.get("baselines", {}).items() if key in r}
    report["verdict"] = verdict(report["pretrained"][key],
                                {"metric": metric, "scores": scores, "skipped": {} if scores else {"(none)": none}},
                                what="the frozen encoder's", remedies=EVALUATE_REMEDIES)


def evaluate_model(model: str | Path, recipe: Recipe | dict[str, Any] | None = None, *,
                   output_dir: str | Path | None = None, device: str = "cpu", baseline: bool = True,
                   write_card: bool = True, num_workers: int = 0, data: str | None = None,
                   label_column: str | None = None, split: str | None = None, test_split: str | None = None,
                   seed: int = 0, label_fractions: Sequence[float] | None = None, seeds: int = 3,
                   report_to: str | Sequence[str] | None = None, settings: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    """Probe a zoo model on labelled data — one's own (``data``: the same forms as ``zoo finetune --data``) or its
    recipe's ``evaluate`` section; with ``baseline`` also a randomly initialised encoder of the same configuration
    and the modality's hand-made baselines, with a verdict when the encoder loses to one. Embeddings are written in
    shards under ``<output>/embeddings``. A local folder's card gets the results in its ``model-index``.
    ``label_fractions``: also the label-efficiency curves (:mod:`.label_efficiency`) over ``seeds`` seeds, as a
    table and ``label_efficiency.png`` on the card. ``report_to``: experiment trackers
    (:func:`pipelines.trackers.log_evaluation`). ``settings``: one's own ``data``'s ``knn_k``, ``layers``."""
    from zoo import AutoEncoder, AutoProcessor, get_modality

    from .trackers import log_evaluation, tracker_names
    report_to = tracker_names(report_to)               # a missing tracker stops here, before any work
    encoder, processor = AutoEncoder.from_pretrained(model), AutoProcessor.from_pretrained(model)
    modality = get_modality(encoder.modality)
    out = Path(output_dir) if output_dir is not None else (Path(model) if Path(model).is_dir() else Path("."))
    out.mkdir(parents=True, exist_ok=True)
    if data is not None:
        train, test, spec, name = _own_data(modality, processor, data, label_column, split, test_split, seed, model,
                                            settings)
    else:
        recipe = _as_recipe(recipe if recipe is not None else recorded_recipe(model))
        spec, name = recipe.evaluate, recipe.name
        check_evaluation_labels(processor, spec)
        if "protocol" in spec:
            report = _protocol_report(model, encoder, processor, modality, recipe, spec, out, baseline, write_card,
                                      (label_fractions, seeds))
            log_evaluation(report_to, out, name, report, settings={"model": str(model), **spec})
            return report
        if "train" not in spec or "test" not in spec:
            raise ValueError(f"recipe {recipe.name!r} has no evaluate.train / evaluate.test data: give --data "
                             "(your labelled data, as zoo finetune --data reads it)")
        train, test = modality.load_data(spec["train"]), modality.load_data(spec["test"])
    k = int(spec.get("knn_k", 20))
    shards = out / "eval"
    pre: dict[str, Any] = {}
    report: dict[str, Any] = {"pretrained": probe_report(encoder, processor, train, test, knn_k=k,
                                                          png=out / "embedding_map.png", device=device,
                                                          title=f"{name} (pretrained)", shards=shards,
                                                          num_workers=num_workers, keep=pre)}
    kept = _compare(report, encoder, processor, modality, train, test, k, device, num_workers) if baseline else {}
    if spec.get("layers", False):
        report["layers"] = layer_probes(encoder, processor, train, test, device=device, num_workers=num_workers)
    metrics = _counts_and_metrics(report, shards / "embeddings", k)
    comparison = comparison_markdown(report)
    if label_fractions:
        comparison += _label_efficiency(report, model, out, name, (label_fractions, seeds), encoder, processor,
                                        modality, train, test, device=device, num_workers=num_workers,
                                        baseline=baseline, **_kept_features(pre, kept))
    record_evaluation(model, name, spec, report, out, write_card, task=modality.task,
                      task_name="frozen-encoder probe", dataset="synthetic" if data is None else spec["dataset"],
                      metrics=metrics, comparison=comparison)
    log_evaluation(report_to, out, name, report, settings={"model": str(model), **spec},
                   embeddings=shards / "embeddings" / "test" / "index.json", label_names=test.label_names)
    return report


def _kept_features(pre: dict[str, Any], kept: dict[str, Any]) -> dict[str, Any]:
    """What the evaluation computed, for the label-efficiency curves: the encoder's embeddings and labels (``pre``,
    :func:`probe_report`'s ``keep``), the random init's and the baselines' features (``kept``, :func:`_compare`'s)."""
    given = {"pretrained": pre["features"], **({"random init": kept["features"]} if "features" in kept else {}),
             **kept.get("baselines", {})}
    return {"given": given, "labels": pre["labels"]}


def label_efficiency(encoder: Encoder, processor: Processor, modality: Any, train: ExampleSet | StreamSet,
                     test: ExampleSet | StreamSet, fractions: Sequence[float], seeds: int = 3, *,
                     device: str = "cpu", num_workers: int = 0, baseline: bool = True,
                     given: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
                     labels: tuple[Sequence[int], Sequence[int]] | None = None) -> dict[str, Any]:
    """:func:`fraction_curves` of the encoder (``"pretrained"``) and, with ``baseline``, the same architecture at
    random init (seed 0) and each hand-made baseline of the modality that applies to the examples. ``given`` (with
    their ``labels``): features already computed, e.g. the evaluation's embeddings, by the same names."""
    features = dict(given or {})

    def both(enc: Encoder) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[list[int], list[int]]]:
        (a, ya), (b, yb) = (_split_embeddings(enc, processor, data, None, part, device=device, num_workers=num_workers)
                            for data, part in ((train, "train"), (test, "test")))
        return (a, b), (ya.tolist(), yb.tolist())
    if "pretrained" not in features or labels is None:
        features["pretrained"], labels = both(encoder)
    if baseline and "random init" not in features:
        torch.manual_seed(0)
        features["random init"], _ = both(type(encoder)(encoder.config))
    ytr, yte = labels
    if baseline and isinstance(train, ExampleSet) and isinstance(test, ExampleSet) \
            and (len(train), len(test)) == (len(ytr), len(yte)):       # every example embedded: rows line up
        for name, fn in modality.baselines.items():
            if name in features:
                continue
            a, b = fn(train.examples, processor), fn(test.examples, processor)
            if a is not None and b is not None:
                features[name] = (torch.as_tensor(a).float(), torch.as_tensor(b).float())
    lined_up = {n: f for n, f in features.items() if (f[0].shape[0], f[1].shape[0]) == (len(ytr), len(yte))}
    from .label_efficiency import fraction_curves
    return fraction_curves(lined_up, ytr, yte, fractions, seeds)


def _label_efficiency(report: dict[str, Any], model: str | Path, out: Path, name: str,
                      fractions: tuple[Sequence[float], int], encoder: Encoder, processor: Processor, modality: Any,
                      train: ExampleSet | StreamSet, test: ExampleSet | StreamSet, protocol: str | None = None,
                      **kwargs: Any) -> str:
    """``report["label_efficiency"]``, its curve in ``out/label_efficiency.png`` and its Markdown for the card."""
    from .label_efficiency import label_efficiency_markdown, plot_label_efficiency
    result = label_efficiency(encoder, processor, modality, train, test, fractions[0], fractions[1], **kwargs)
    report["label_efficiency"] = result
    if result.get("merged"):
        logging.getLogger(__name__).info("--label-fractions: %s gave no more labelled examples than the next "
                                         "fraction and are left out of the curve (at least one per class)",
                                         ", ".join(f"{f:g}" for f in result["merged"]))
    png = plot_label_efficiency(result, out / "label_efficiency.png", title=f"{name}: label efficiency")
    if not Path(model).is_dir():                  # a Hub id: no card is written
        return "\n\n" + label_efficiency_markdown(result, None, protocol)
    if png.parent.resolve() != Path(model).resolve():    # --output elsewhere: the card links its own copy
        shutil.copyfile(png, Path(model) / png.name)
    return "\n\n" + label_efficiency_markdown(result, png.name, protocol)


def _protocol_baselines(report: dict[str, Any], protocol: Any, processor: Processor, spec: dict[str, Any]) -> None:
    """A protocol's hand-made baselines, scored as the encoder is, and the verdict on its first metric (a protocol
    without any reports its own comparison, e.g. events' boosting: embeddings beside hand-made aggregates)."""
    if not protocol.baselines:
        return
    for name, fn in protocol.baselines.items():
        report.setdefault("baselines", {})[name] = fn(processor, spec)
    key = next(k for k in report["pretrained"] if k not in protocol.hidden and not k.endswith("_std"))
    _judge(report, key, key.replace("_", " "), f"no baseline of protocol {report['protocol']!r} reports {key}")


def _protocol_report(model, encoder, processor, modality, recipe, spec, out, baseline, write_card,
                     fractions=(None, 3)) -> dict[str, Any]:
    """A modality's own evaluation protocol (e.g. node classification on one graph); label-efficiency curves over
    the protocol's ``examples``."""
    name = spec["protocol"]
    if name not in modality.evaluators:
        raise ValueError(f"modality {modality.name!r} has no evaluation protocol {name!r}; "
                         f"it has {sorted(modality.evaluators)}")
    protocol = modality.evaluators[name]
    report: dict[str, Any] = {"protocol": name, "pretrained": protocol.fn(encoder, processor, spec)}
    if baseline:
        torch.manual_seed(0)
        report["random_init"] = protocol.fn(type(encoder)(encoder.config), processor, spec)
        _protocol_baselines(report, protocol, processor, spec)
    metrics = [(k.replace("_", " "), v) for k, v in report["pretrained"].items() if k not in protocol.hidden]
    comparison = f"{COMPARISON_HEADING}\n\n{protocol_markdown(report)}"
    if fractions[0]:
        if protocol.examples is None:
            raise ValueError(f"protocol {name!r} of {modality.name!r} names no labelled examples (Protocol.examples):"
                             " --label-fractions cannot split them")
        train, test = protocol.examples(spec)
        comparison += _label_efficiency(report, model, out, recipe.name, fractions, encoder, processor, modality,
                                        train, test, protocol=name, baseline=baseline)
    record_evaluation(model, recipe.name, spec, report, out, write_card, task=protocol.task,
                      task_name=f"{name} protocol", dataset=spec.get("dataset", recipe.name), metrics=metrics,
                      metric=protocol.metric, comparison=comparison)
    return report
