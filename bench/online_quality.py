"""Online quality and label efficiency on the six demo recipes (issue #35, "Must show").

For each demo recipe: pretrain with the online probes every ``steps / 6`` steps and a checkpoint at each of those
steps (all kept); then the recipe's own final probe (its evaluation: the linear probe on the whole evaluation set,
or its protocol's first metric) on every checkpoint's encoder, and the Spearman rank correlation across the
checkpoints between the online k-NN value (and RankMe) and that final probe. Cost: each run's median measurement
time against its median step time, as the share it adds at the default interval (``train.quality_every``).
Where the final probe is cross-validated, how reproducible its own ranking is (:func:`self_agreement`): the
agreement an online probe would reach were it the final probe itself, on as many held-out examples.
Label efficiency: ``zoo evaluate --label-fractions 0.01,0.05,0.1,0.5,1 --seeds 3`` on each final model
(pretrained, random init, hand-made baselines). ``python -m bench.online_quality [OUT]``; tables in
``bench/results/online-quality.md`` and ``label-efficiency.md``, numbers in ``online-quality.json``."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from pipelines.hooks import Hook

from .harness import machine, publish_table, results_dir

DEMO = ["audio-wav2vec2-demo", "tabular-tjepa-demo", "graph-graphmae-sbm", "video-videomae-demo",
        "pointcloud-pointmae-demo", "events-coles-demo"]          # the Makefile's DEMO_RECIPES
FRACTIONS = [0.01, 0.05, 0.1, 0.5, 1.0]
MEASUREMENTS = 6
LONGER, LONGER_EXAMPLES = 4, 512   # the third comparison: runs this many times the recipe's steps, slices this big
FOLDS, REPEATS = 5, 2              # the cross-validated final probe: stratified folds, repeated with other shuffles
GOAL = 4                           # issue #35: Spearman ≥ 0.8 on at least this many of the six demo recipes
RESEEDS = (1, 2)                   # the longer runs again from these train.seed: checks the k-NN was not chosen on


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (ties: average ranks); NaN when either side is constant."""
    from scipy.stats import spearmanr
    return float(spearmanr(a, b).statistic)


def final_probe(built: Any, recipe: Any) -> tuple[str, Any]:
    """The recipe's evaluation as a function of the encoder: (metric name, fn(encoder) → value)."""
    from pipelines.evaluate import probe_report
    spec, modality = recipe.evaluate, built.modality
    if "protocol" in spec:
        protocol = modality.evaluators[spec["protocol"]]
        first = next(k for k in protocol.fn(built.encoder, built.processor, spec) if k not in protocol.hidden)
        return first, lambda enc: protocol.fn(enc, built.processor, spec)[first]
    train, test = modality.load_data(spec["train"]), modality.load_data(spec["test"])
    k = int(spec.get("knn_k", 20))
    return "linear_probe", lambda enc: probe_report(enc, built.processor, train, test, knn_k=k)["linear_probe"]


def cv_probe(built: Any, recipe: Any) -> Any:
    """The recipe's final probe with less noise: the same classifier (the linear probe; boosting for a boosting
    protocol) scored by repeated stratified cross-validation (``FOLDS`` x ``REPEATS``) over the recipe's labelled train
    and test examples pooled, so each checkpoint's figure averages over every example instead of one test split of
    100–1,500. ``fn(encoder) → (accuracy, balanced accuracy, correct)``, ``correct`` each pooled example's share of
    the shuffles it was predicted right in (for :func:`self_agreement`); ``None`` where the recipe's evaluation has
    no train/test pair (graphs' node protocol)."""
    import numpy as np
    import torch
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import RepeatedStratifiedKFold

    from zoo.embedding import pooled_features
    spec, modality = recipe.evaluate, built.modality
    if "train" not in spec or "test" not in spec:
        return None
    sets = [modality.load_data(spec["train"]), modality.load_data(spec["test"])]
    y = np.concatenate([np.asarray(list(d.labels)) for d in sets])
    boosted = spec.get("protocol") == "boosting"

    def fit(x: np.ndarray, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        if boosted:
            from sklearn.ensemble import HistGradientBoostingClassifier
            clf = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, random_state=0)
        else:
            from sklearn.linear_model import LogisticRegression
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=0))
        return clf.fit(x[train], y[train]).predict(x[test])

    def probe(encoder: Any) -> tuple[float, float, list[float]]:
        with torch.no_grad():
            x = np.concatenate([pooled_features(encoder, built.processor, d) for d in sets])
        folds = RepeatedStratifiedKFold(n_splits=FOLDS, n_repeats=REPEATS, random_state=0).split(x, y)
        acc, bal, correct = [], [], np.zeros(len(y))
        for train, test in folds:
            pred = fit(x, train, test)
            acc.append(float((pred == y[test]).mean()))
            bal.append(float(balanced_accuracy_score(y[test], pred)))
            correct[test] += (pred == y[test]) / REPEATS
        return float(np.mean(acc)), float(np.mean(bal)), [round(float(c), 3) for c in correct]
    return probe


class Snapshots(Hook):
    """A hook that, at each of ``steps``, has the run's online quality probe measured (if its interval did not) and
    keeps a copy of the encoder's weights: the run's checkpoints at those steps, in memory."""

    every = 1

    def __init__(self, steps: list[int]) -> None:
        self.steps: set[int] = set(steps)
        self.weights: dict[int, dict[str, Any]] = {}

    def on_interval(self, run: Any, step: int) -> bool:
        from pipelines.quality import QualityHook
        if step in self.steps:
            quality = next(h for h in run.hooks if isinstance(h, QualityHook))
            if not quality.history or quality.history[-1]["step"] != step:
                quality._measure(run, step)
            self.weights[step] = {k: v.detach().clone() for k, v in quality.encoder.state_dict().items()}
        return False


def geometric_steps(steps: int, points: int = 7) -> list[int]:
    """``steps, steps/2, steps/4, …`` (rounded, distinct, at least 1): where a short run's quality moves most."""
    return sorted({max(1, round(steps / 2 ** k)) for k in range(points)})


def uniform_steps(steps: int) -> list[int]:
    """Every ``steps / MEASUREMENTS`` steps and the last: where :func:`one_recipe` saves its checkpoints."""
    every = max(1, steps // MEASUREMENTS)
    return sorted({*range(every, steps + 1, every), steps})


def run_tag(scale: int = 1, examples: int | None = None, spacing: Any = None, seed: int | None = None) -> str:
    """The name a comparison's run folders and cached file go by (``geometric``, ``uniform``, ``x4-512``,
    ``x4-512-seed1``): :func:`one_recipe_geometric`'s arguments, which :func:`run` and :func:`add_correct` share."""
    spaced = spacing.__name__.split("_")[0] if spacing else "geometric"
    tag = spaced if scale == 1 and not examples else f"x{scale}-{examples}" + (f"-{spaced}" if spacing else "")
    return tag + (f"-seed{seed}" if seed else "")


def one_recipe_geometric(name: str, out: Path, scale: int = 1, examples: int | None = None,
                         cross_validated: bool = False, spacing: Any = None, seed: int | None = None
                         ) -> dict[str, Any]:
    """The same comparison on encoder snapshots at geometrically spaced steps (:func:`geometric_steps`; ``spacing``
    another function of the run's steps: :func:`uniform_steps`); with ``scale`` the run is that many times the
    recipe's steps, with ``examples`` its probe slices that size; with ``cross_validated`` each snapshot also under
    :func:`cv_probe` (``final_cv``); with ``seed`` the run is trained from that ``train.seed`` (another init, order
    and masks). Each snapshot is also scored by the online k-NN on raw embeddings (``knn_raw``: the online k-NN
    before 2026-12-07) on the same slices. The snapshots' encoder weights are kept in the run folder
    (``snapshots/``)."""
    from safetensors.torch import save_file

    from pipelines.build import build
    from pipelines.pretrain import pretrain
    from pipelines.quality import quality_probe
    from pipelines.recipe import load_recipe
    steps = load_recipe(name).train.steps * scale
    at = (spacing or geometric_steps)(steps)
    sets = [f"train.steps={steps}", f"train.checkpoint_every={steps}"] + ([f"train.seed={seed}"] if seed else [])
    recipe = load_recipe(name, sets + ([f"train.quality_examples={examples}"] if examples else []))
    snaps = Snapshots(at)
    tag = run_tag(scale, examples, spacing, seed)
    summary = pretrain(recipe, out / f"{name}-{tag}", resume=False, hooks=(snaps,))
    history = {h["step"]: h for h in summary["quality"]["history"]}
    built = build(recipe)
    metric, probe = final_probe(built, recipe)
    cv = cv_probe(built, recipe) if cross_validated else None
    raw = quality_probe(built.modality, built.processor, built.data, recipe.evaluate, recipe.train.quality_examples,
                        recipe.train.seed, standardised=False)
    kept = out / f"{name}-{tag}" / "snapshots"            # each snapshot's encoder, for probes added later
    kept.mkdir(parents=True, exist_ok=True)

    def row(step: int) -> dict[str, Any]:
        r = {"step": step, "final": probe(built.encoder), "knn": history[step].get("knn"),
             "knn_raw": raw.measure(built.encoder).get("knn"), "rankme": history[step]["rankme"]}
        if cv is not None:
            r["final_cv"], r["final_cv_balanced"], r["final_cv_correct"] = cv(built.encoder)
        return r
    init = row(0)
    rows = []
    for step in at:
        built.encoder.load_state_dict(snaps.weights[step])
        save_file(snaps.weights[step], str(kept / f"encoder-step-{step}.safetensors"))
        rows.append(row(step))
    result = {"recipe": name, "steps": steps, "metric": metric, "checkpoints": rows, "init_row": init,
              "probe_source": summary["quality"]["on"], **correlations(rows, init),
              **{f"{k}_raw": v for k, v in correlations(rows, init, knn="knn_raw").items() if "knn" in k}}
    if cv is not None:
        result.update({f"{k}_cv": v for k, v in correlations(rows, init, "final_cv").items()})
        result.update({f"{k}_raw_cv": v for k, v in correlations(rows, init, "final_cv", "knn_raw").items()
                       if "knn" in k})
        result["cv"] = f"{FOLDS} folds x {REPEATS}"
    return result


def one_recipe(name: str, out: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    from pipelines.build import build
    from pipelines.evaluate import evaluate_model
    from pipelines.pretrain import pretrain
    from pipelines.recipe import TrainConfig, load_recipe
    steps = load_recipe(name).train.steps
    every = max(1, steps // MEASUREMENTS)
    recipe = load_recipe(name, [f"train.quality_every={every}", f"train.checkpoint_every={every}",
                                "train.keep_checkpoints=1000"])
    t0 = time.perf_counter()
    summary = pretrain(recipe, out / name, resume=False)
    wall = time.perf_counter() - t0
    history = {h["step"]: h for h in summary["quality"]["history"]}
    built = build(recipe)                                   # the checkpoints' weights are loaded into it
    metric, probe = final_probe(built, recipe)
    init = {"step": 0, "final": probe(built.encoder), "knn": history[0].get("knn"), "rankme": history[0]["rankme"]}
    rows = []
    for ckpt in sorted((out / name / "checkpoints").glob("step-*")):
        step = int(ckpt.name.split("-")[1])
        built.pretrainer.load_state_dict(load_file(str(ckpt / "model.safetensors")))
        rows.append({"step": step, "final": probe(built.encoder), "knn": history[step].get("knn"),
                     "rankme": history[step]["rankme"]})
    logged = [json.loads(x) for x in (out / name / "metrics.jsonl").read_text().splitlines()]
    step_s = statistics.median(r["step_s"] + r["data_wait_s"] for r in logged if "quality_s" not in r)
    quality_s = statistics.median(r["quality_s"] for r in logged if "quality_s" in r)
    default = TrainConfig().quality_every
    t1 = time.perf_counter()
    report = evaluate_model(out / name / "model", recipe, output_dir=out / name / "eval", write_card=False,
                            label_fractions=FRACTIONS, seeds=3)
    return {"recipe": name, "steps": steps, "every": every, "metric": metric, "checkpoints": rows,
            "init_row": init, **correlations(rows, init),
            "init": history.get(0), "step_s": step_s, "quality_s": quality_s,
            "overhead_default": quality_s / (default * step_s), "default_every": default,
            "pretrain_wall_s": round(wall, 1), "evaluate_s": round(time.perf_counter() - t1, 1),
            "label_efficiency": report["label_efficiency"], "probe_source": summary["quality"]["on"]}


def init_row(name: str, runs: Path) -> dict[str, Any]:
    """Step 0 of a finished entry that lacks it: the run's random init (the seeded build) under the final probe,
    and the online values the run logged there."""
    from pipelines.build import build
    from pipelines.recipe import load_recipe
    recipe = load_recipe(name)
    built = build(recipe)
    _, probe = final_probe(built, recipe)
    summary = json.loads((runs / name / "train_summary.json").read_text())
    first = summary["quality"]["history"][0]
    return {"step": 0, "final": probe(built.encoder), "knn": first.get("knn"), "rankme": first["rankme"]}


def correlations(rows: list[dict[str, Any]], init: dict[str, Any], final: str = "final", knn: str = "knn"
                 ) -> dict[str, float | None]:
    """Spearman of the online k-NN (the rows' ``knn`` key) and of RankMe against the final probe (the rows'
    ``final`` key): across the saved checkpoints, and with the random init (step 0) as one more point."""
    out: dict[str, float | None] = {}
    for suffix, points in (("", rows), ("_with_init", [init, *rows])):
        knn_values = [r.get(knn) for r in points]
        finals = [r[final] for r in points]
        out["spearman_knn" + suffix] = spearman(knn_values, finals) if None not in knn_values else None
        out["spearman_rankme" + suffix] = spearman([r["rankme"] for r in points], finals)
    return out


def self_agreement(points: list[dict[str, Any]], size: int | None = None, draws: int = 200, seed: int = 0
                   ) -> tuple[float, float] | None:
    """How reproducible the final probe's own ranking of ``points`` is: ``draws`` times, the pooled examples of
    :func:`cv_probe` split at random into ``size`` of them (default: half) and the rest, each point's accuracy on
    either part, and the Spearman between the two parts' values. Returns (median Spearman over the splits where it
    is defined, share of all splits at ≥ 0.8: a split where either part reads the same at every point has none and
    counts as below); ``None`` where the points lack the per-example record (``final_cv_correct``). With ``size``
    the online probe's number of held-out examples, it is the agreement an online probe would reach were it the
    final probe itself, measured on as many examples: one scoring accuracy on that many should not be expected to do
    much better."""
    import numpy as np
    if not points or any("final_cv_correct" not in p for p in points):
        return None
    correct = np.asarray([p["final_cv_correct"] for p in points], dtype=float)      # [points, examples]
    rng = np.random.default_rng(seed)
    rhos = []
    for _ in range(draws):
        order = rng.permutation(correct.shape[1])
        half = min(size, len(order) - 1) if size else len(order) // 2
        rhos.append(spearman(correct[:, order[:half]].mean(1).tolist(), correct[:, order[half:]].mean(1).tolist()))
    rhos_arr = np.asarray(rhos)
    finite = rhos_arr[~np.isnan(rhos_arr)]
    return (float(np.median(finite)) if len(finite) else float("nan")), float(np.mean(np.nan_to_num(rhos_arr) >= 0.8))


def held_out_size(entry: dict[str, Any]) -> int | None:
    """The online probe's number of held-out examples, from the run's description of its slices (``probe_source``:
    "128 held-out evaluation examples against 256")."""
    import re
    found = re.match(r"(\d+) held-out", entry.get("probe_source") or "")
    return int(found.group(1)) if found else None


def chance_of_at_least(shares: list[float], k: int) -> float:
    """The probability that at least ``k`` of independent events with probabilities ``shares`` happen."""
    dist = [1.0]                                          # dist[j]: the probability of exactly j events so far
    for p in shares:
        dist = [(dist[j] if j < len(dist) else 0.0) * (1 - p) + (dist[j - 1] * p if j else 0.0)
                for j in range(len(dist) + 1)]
    return float(sum(dist[k:]))


def add_correct(entry: dict[str, Any], runs: Path, tag: str, seed: int | None = None) -> bool:
    """A cached cross-validated entry from before the per-example record: its random init (the seeded build) and
    kept snapshots under :func:`cv_probe` again, adding ``final_cv_correct`` to each point; the recomputed accuracy
    must equal the cached one. Returns whether the entry changed."""
    if "final_cv" not in entry["init_row"] or "final_cv_correct" in entry["init_row"]:
        return False
    from safetensors.torch import load_file

    from pipelines.build import build
    from pipelines.recipe import load_recipe
    recipe = load_recipe(entry["recipe"], [f"train.steps={entry['steps']}"] + ([f"train.seed={seed}"] if seed else []))
    built = build(recipe)
    cv = cv_probe(built, recipe)
    kept = runs / f"{entry['recipe']}-{tag}" / "snapshots"
    for point in [entry["init_row"], *entry["checkpoints"]]:
        if point["step"]:
            built.encoder.load_state_dict(load_file(str(kept / f"encoder-step-{point['step']}.safetensors")))
        accuracy, _, point["final_cv_correct"] = cv(built.encoder)
        if abs(accuracy - point["final_cv"]) > 1e-6:
            raise RuntimeError(f"{entry['recipe']} ({tag}) step {point['step']}: the cross-validated probe reads "
                               f"{accuracy:.4f} now, {point['final_cv']:.4f} when cached")
    return True


def separated_pairs(points: list[dict[str, Any]], n_test: int, knn: str = "knn") -> tuple[int, int | None]:
    """Pairs of checkpoints whose final probes differ by more than twice the standard error of a difference of two
    accuracies on ``n_test`` examples (``sqrt(p1 q1 / n + p2 q2 / n)``), and how many of them the online k-NN (the
    points' ``knn`` key) orders the same way (``None`` without a k-NN)."""
    pairs = agree = 0
    for i, a in enumerate(points):
        for b in points[i + 1:]:
            se = ((a["final"] * (1 - a["final"]) + b["final"] * (1 - b["final"])) / n_test) ** 0.5
            if abs(a["final"] - b["final"]) > 2 * se:
                pairs += 1
                if a.get(knn) is not None and (a[knn] - b[knn]) * (a["final"] - b["final"]) > 0:
                    agree += 1
    return pairs, (agree if points and points[0].get(knn) is not None else None)


def _pairs(r: dict[str, Any], n_test: int) -> str:
    pairs, agree = separated_pairs([r["init_row"], *r["checkpoints"]], n_test)
    return f"{agree if agree is not None else '—'} of {pairs}"


def _fmt(value: float | None) -> str:
    return "—" if value is None else ("n/a (constant)" if value != value else f"{value:.2f}")


def _cells(r: dict[str, Any], n_test: int) -> str:
    """The columns both tables share: final probe and online k-NN (init, first → last), the Spearmans, the pairs."""
    c, i = r["checkpoints"], r["init_row"]
    knn = f"{i['knn']:.3f}, {c[0]['knn']:.3f} → {c[-1]['knn']:.3f}" if i["knn"] is not None else "—"
    return (f"{i['final']:.3f}, {c[0]['final']:.3f} → {c[-1]['final']:.3f} | {knn} | {_fmt(r['spearman_knn'])} "
            f"({_fmt(r['spearman_knn_with_init'])}) | {_fmt(r['spearman_rankme'])} "
            f"({_fmt(r['spearman_rankme_with_init'])}) | {_pairs(r, n_test)}")


def _verdicts(results: list[dict[str, Any]], what: str) -> list[str]:
    lines = []
    for key, where in (("spearman_knn", f"across the {what}"), ("spearman_knn_with_init", "with the random init")):
        good = [r["recipe"] for r in results if r[key] is not None and r[key] >= 0.8]
        lines.append(f"{'' if key.endswith('init') else chr(10)}Online k-NN Spearman ≥ 0.8 {where}: {len(good)} of "
                     f"{len(results)} ({', '.join(good) or 'none'}).")
    return lines


def tables(results: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    q = ["### Online quality on the demo recipes", "", f"Machine: {machine()}", "",
         "Online k-NN and RankMe at each saved checkpoint (every steps/6) against the recipe's own final probe on "
         "the same checkpoint; Spearman across the checkpoints. Cost: the median measurement against the median "
         "training step, as the share it adds at the default interval (`train.quality_every`).", "",
         "| recipe | checkpoints | final probe: init, first → last checkpoint | online k-NN: init, first → last | "
         "Spearman k-NN (with init) | Spearman RankMe (with init) | pairs apart > 2 SE: k-NN agrees | "
         "RankMe: init, first → last | measurement (s) | "
         f"step (s) | cost at every {results[0]['default_every'] if results else 500} steps |",
         "| --- | ---: | --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
    for r in results:
        c, i = r["checkpoints"], r["init_row"]
        q.append(f"| {r['recipe']} | {len(c)} | {r['metric'].replace('_', ' ')} "
                 f"{_cells(r, r['label_efficiency']['test_examples'])} | {i['rankme']:.1f}, {c[0]['rankme']:.1f} → "
                 f"{c[-1]['rankme']:.1f} | {r['quality_s']:.2f} | {r['step_s']:.3f} | "
                 f"{100 * r['overhead_default']:.1f}% |")
    q += _verdicts(results, "saved checkpoints")
    e = ["### Label efficiency of the demo encoders", "", f"Machine: {machine()}", "",
         "Linear probe on a stratified fraction of the labelled training examples (labelled examples in brackets), "
         "mean ± std over 3 seeds, on the recipe's held-out examples (graph: the node protocol's split; events: the "
         "entities of the boosting protocol, here through the linear probe).", ""]
    for r in results:
        le = r["label_efficiency"]
        head = " | ".join(f"{f:g} ({n})" for f, n in zip(le["fractions"], le["labelled"]))
        e += [f"**{r['recipe']}** ({le['test_examples']} held out)", "", f"| features | {head} |",
              "| --- |" + " ---: |" * len(le["fractions"])]
        for name, c in le["curves"].items():
            e.append(f"| {name} | " + " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in zip(c["mean"], c["std"])) + " |")
        e.append("")
    return q, e


GEOMETRIC = ("Encoder snapshots at geometrically spaced steps (N, N/2, N/4, …: where a short run's quality moves), "
             "the same run otherwise:")


def geometric_table(results: list[dict[str, Any]], n_test: dict[str, int], title: str = GEOMETRIC) -> list[str]:
    lines = ["", title, "",
             "| recipe | snapshots at steps | final probe: init, first → last | online k-NN: init, first → last | "
             "Spearman k-NN (with init) | Spearman RankMe (with init) | pairs apart > 2 SE: k-NN agrees |",
             "| --- | --- | --- | --- | ---: | ---: | ---: |"]
    for r in results:
        lines.append(f"| {r['recipe']} | {', '.join(str(x['step']) for x in r['checkpoints'])} | "
                     f"{_cells(r, n_test[r['recipe']])} |")
    return lines + _verdicts(results, "snapshots")


def cv_table(results: list[dict[str, Any]], runs: str, n_test: dict[str, int]) -> list[str]:
    """Runs whose snapshots are also under the cross-validated final probe (:func:`cv_probe`): the online k-NN's
    Spearman against it, and against the recipe's single split as before; the final probe against itself (its
    single split against the cross-validated figure, and :func:`self_agreement` on as many held-out examples as the
    online k-NN); and a summary of what an online probe that were the final probe itself would reach (its mean count
    of recipes at ≥ 0.8, and the chance of four or more: :func:`chance_of_at_least`)."""
    lines = ["", f"{runs} with the final probe cross-validated ({FOLDS} stratified folds x {REPEATS} shuffles over "
             "the recipe's labelled train and test examples pooled; graphs: the node protocol's own split, as above):",
             "",
             "| recipe | final probe CV: init, first → last (balanced) | online k-NN: init, first → last | "
             "Spearman k-NN vs CV probe (with init) | vs single split (with init) | Spearman RankMe vs CV probe | "
             "k-NN on raw embeddings (before 2026-12-07): vs CV probe, vs single split | "
             "pairs apart > 2 SE on the single split: k-NN agrees (raw k-NN) | "
             "final probe against itself: single split vs CV | on as many held-out examples as the online k-NN vs "
             "the rest: median Spearman (splits ≥ 0.8) |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    good, good_raw, reliable, shares, recorded = [], [], [], [], False
    for r in results:
        c, i = r["checkpoints"], r["init_row"]
        cv = "final_cv" in i
        key = "_cv" if cv else ""
        rho, rho_init = r.get("spearman_knn" + key), r.get("spearman_knn_with_init" + key)
        if rho is not None and rho >= 0.8:
            good.append(r["recipe"])
        rho_raw = r.get("spearman_knn_raw" + key)
        if rho_raw is not None and rho_raw >= 0.8:
            good_raw.append(r["recipe"])
        raw = f"{_fmt(rho_raw)}, {_fmt(r.get('spearman_knn_raw'))}"
        points = [i, *c]
        pairs, agree = separated_pairs(points, n_test[r["recipe"]])
        agree_raw = separated_pairs(points, n_test[r["recipe"]], "knn_raw")[1]
        raw_pairs = f"{agree} of {pairs} ({'—' if agree_raw is None else agree_raw})"
        probe = (f"{i['final_cv']:.3f}, {c[0]['final_cv']:.3f} → {c[-1]['final_cv']:.3f} "
                 f"({i['final_cv_balanced']:.3f}, {c[0]['final_cv_balanced']:.3f} → {c[-1]['final_cv_balanced']:.3f})"
                 if cv else "— (no train/test pair: the node protocol's split)")
        knn = f"{i['knn']:.3f}, {c[0]['knn']:.3f} → {c[-1]['knn']:.3f}" if i["knn"] is not None else "—"
        itself = _fmt(spearman([x["final"] for x in c], [x["final_cv"] for x in c])) if cv else "—"
        halves = self_agreement(c, held_out_size(r))
        recorded |= halves is not None
        shares.append(1.0 if halves is None else halves[1])      # without the record (graphs): counted as met
        if halves is not None and halves[0] >= 0.8:
            reliable.append((r["recipe"], rho is not None and rho >= 0.8))
        lines.append(f"| {r['recipe']} | {probe} | {knn} | {_fmt(rho)} ({_fmt(rho_init)}) | "
                     f"{_fmt(r['spearman_knn'])} ({_fmt(r['spearman_knn_with_init'])}) | "
                     f"{_fmt(r.get('spearman_rankme' + key))} | {raw} | {raw_pairs} | {itself} | "
                     f"{'—' if halves is None else f'{_fmt(halves[0])} ({halves[1]:.0%})'} |")
    lines += ["", f"Online k-NN Spearman ≥ 0.8 against the final probe (cross-validated where the recipe has a "
                  f"train/test pair): {len(good)} of {len(results)} ({', '.join(good) or 'none'})."]
    if any("spearman_knn_raw" in r for r in results):
        lines.append(f"The k-NN on raw embeddings, the same way: {len(good_raw)} of {len(results)} "
                     f"({', '.join(good_raw) or 'none'}).")
    if recorded:
        met = [name for name, ok in reliable if ok]
        lines.append(f"The final probe on as many held-out examples as the online k-NN ranks the checkpoints as on the "
                     f"rest of its examples (median Spearman ≥ 0.8) on {len(reliable)} of {len(results)} "
                     f"({', '.join(n for n, _ in reliable) or 'none'}); there the online k-NN reaches ≥ 0.8 against "
                     f"it on {len(met)} of {len(reliable)}. An online probe that were the final probe itself, on that "
                     f"many examples, would reach ≥ 0.8 on {sum(shares):.1f} of {len(results)} on average"
                     + (f" and on at least {GOAL} with probability {chance_of_at_least(shares, GOAL):.0%} (the recipes "
                        "taken as independent; " if len(results) >= GOAL else " (")
                     + "those without a per-example record counted as met).")
    return lines


def _cached(path: Path, names: list[str], fn: Any, out: Path) -> dict[str, dict[str, Any]]:
    """Each recipe's entry, from ``path`` (a killed benchmark picks up where it stopped) or computed by ``fn``."""
    done = {json.loads(x)["recipe"]: json.loads(x) for x in path.read_text().splitlines()} if path.is_file() else {}
    for name in names:
        if name not in done:
            done[name] = fn(name, out / "runs")
            with open(path, "a") as fh:
                fh.write(json.dumps(done[name]) + "\n")
    return done


def run(out: Path, recipes: list[str] | None = None, scale: int = LONGER, examples: int = LONGER_EXAMPLES,
        seeds: tuple[int, ...] = RESEEDS) -> str:
    done = _cached(out / "online-quality.jsonl", recipes or DEMO, one_recipe, out)
    geometric = _cached(out / "online-quality-geometric.jsonl", recipes or DEMO, one_recipe_geometric, out)
    longer = _cached(out / f"online-quality-x{scale}-{examples}.jsonl", recipes or DEMO,
                     lambda name, runs: one_recipe_geometric(name, runs, scale, examples), out)
    def cross_validated(**kind: Any) -> dict[str, dict[str, Any]]:
        """The comparison ``kind`` (:func:`one_recipe_geometric`'s arguments) under the cross-validated probe, its
        cached entries of before the per-example record completed (:func:`add_correct`)."""
        path = out / f"online-quality-{run_tag(**kind)}-cv.jsonl"
        entries = _cached(path, recipes or DEMO,
                          lambda name, runs: one_recipe_geometric(name, runs, cross_validated=True, **kind), out)
        for entry in entries.values():
            if add_correct(entry, out / "runs", run_tag(**kind), kind.get("seed")):
                path.write_text("".join(json.dumps(e) + "\n" for e in entries.values()))
        return entries
    crossed = cross_validated(scale=scale, examples=examples)
    reseeded = {seed: cross_validated(scale=scale, examples=examples, seed=seed) for seed in seeds}
    uniform = cross_validated(spacing=uniform_steps)
    for name, entry in done.items():
        if "init_row" not in entry:                # entries of before the random-init point
            entry["init_row"] = init_row(name, out / "runs")
            entry.update(correlations(entry["checkpoints"], entry["init_row"]))
    results = [done[n] for n in (recipes or DEMO) if n in done]
    q, e = tables(results)
    n_test = {r["recipe"]: r["label_efficiency"]["test_examples"] for r in results}
    q += geometric_table([geometric[n] for n in (recipes or DEMO) if n in geometric], n_test)
    q += geometric_table([longer[n] for n in (recipes or DEMO) if n in longer], n_test,
                         f"Runs {scale} times the recipe's steps, snapshots at geometrically spaced steps, probe "
                         f"slices of up to {examples} examples:")
    q += cv_table([crossed[n] for n in (recipes or DEMO) if n in crossed],
                  f"The same runs ({scale} times the steps, slices of up to {examples})", n_test)
    for seed in seeds:
        q += cv_table([reseeded[seed][n] for n in (recipes or DEMO) if n in reseeded[seed]],
                      f"The same longer runs ({scale} times the steps, slices of up to {examples}) trained from "
                      f"another seed (`train.seed={seed}`: another init, order and masks; a check the online k-NN's "
                      "design was not chosen on" + ("; run after every table above was measured, nothing changed)"
                                                    if seed > 1 else ")"), n_test)
    q += cv_table([uniform[n] for n in (recipes or DEMO) if n in uniform],
                  "The demo runs again (the recipe's steps and probe slices), snapshots where the first table saved "
                  "its checkpoints (every steps/6 and the last),", n_test)
    root = Path(__file__).parent / "results"
    (root / "online-quality.json").write_text(json.dumps({"uniform": results, "geometric": list(geometric.values()),
                                                          f"x{scale}": list(longer.values()),
                                                          f"x{scale}-cv": list(crossed.values()),
                                                          **{f"x{scale}-seed{seed}-cv": list(reseeded[seed].values())
                                                             for seed in seeds},
                                                          "uniform-cv": list(uniform.values())}, indent=2) + "\n")
    publish_table(e, root / "label-efficiency.md")
    return publish_table(q, root / "online-quality.md")


def main() -> str:
    return run(results_dir("online-quality"))


if __name__ == "__main__":
    import argparse
    import os
    os.environ.setdefault("TQDM_DISABLE", "1")
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("out", nargs="?", default=None, help="default: bench/results/online-quality")
    p.add_argument("--recipes", nargs="*", default=None)
    p.add_argument("--scale", type=int, default=LONGER, help="the third comparison's runs: times the recipe's steps")
    p.add_argument("--examples", type=int, default=LONGER_EXAMPLES, help="the third comparison's probe slices")
    p.add_argument("--seeds", type=int, nargs="*", default=list(RESEEDS), help="the longer runs again from these seeds")
    args = p.parse_args()
    target = Path(args.out) if args.out else results_dir("online-quality")
    target.mkdir(parents=True, exist_ok=True)
    run(target, args.recipes, args.scale, args.examples, tuple(args.seeds))
