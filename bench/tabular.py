"""T-JEPA on UCI Adult: the same MLP on frozen T-JEPA embeddings vs on the raw features, and scikit-learn's
HistGradientBoostingClassifier, mean ± std over seeds of the downstream model; plus pretraining and
embedding throughput (rows/s). Skipped without the Adult files."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from modalities.tabular.baselines import raw_features
from modalities.tabular.data import data_dir
from pipelines.pretrain import pretrain
from pipelines.recipe import load_recipe
from zoo import AutoEncoder, AutoProcessor, get_modality

from .harness import machine

SEEDS = (0, 1, 2)


@torch.no_grad()
def _embed(encoder, processor, rows, batch: int = 2048) -> tuple[torch.Tensor, torch.Tensor, float]:
    t = processor.transform(rows)
    pooled, flat = [], []
    t0 = time.perf_counter()
    for i in range(0, len(rows), batch):
        out = encoder({k: v[i:i + batch] for k, v in t.items()})
        pooled.append(out.pooled)
        flat.append(out.tokens.flatten(1))
    secs = time.perf_counter() - t0
    return torch.cat(pooled), torch.cat(flat), len(rows) / secs


def _mlp(xtr, ytr, xte, yte, seed: int) -> float:
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    clf = make_pipeline(StandardScaler(), MLPClassifier((256, 256), early_stopping=True, random_state=seed,
                                                        max_iter=200, alpha=1e-4))
    clf.fit(xtr, ytr)
    return float(clf.score(xte, yte))


RECIPES = ("tabular-tjepa-adult", "tabular-tjepa-credit-data", "tabular-tjepa-mlc-churn",
           "tabular-tjepa-breast-cancer")


def table(name: str, out: Path) -> tuple[str, list[dict]]:
    """Pretrain one recipe, then compare downstream models on its held-out split; write its card."""
    recipe = load_recipe(name)
    summary = pretrain(recipe, out / name, resume=False)
    rows_per_s = recipe.train.batch_size * summary["steps"] / summary["wall_seconds"]
    model = Path(summary["model_dir"])
    enc, proc = AutoEncoder.from_pretrained(model), AutoProcessor.from_pretrained(model)
    mod = get_modality("tabular")
    train, test = mod.load_data(recipe.data["train"]), mod.load_data(recipe.evaluate["test"])
    ytr, yte = np.asarray(train.labels), np.asarray(test.labels)
    ptr, ftr, _ = _embed(enc, proc, train.examples)
    pte, fte, embed_rate = _embed(enc, proc, test.examples)
    rtr, rte = raw_features(train.examples, proc).numpy(), raw_features(test.examples, proc).numpy()
    feats = {"MLP on raw features": (rtr, rte),
             "MLP on T-JEPA tokens (frozen, flattened)": (ftr.numpy(), fte.numpy()),
             "MLP on T-JEPA pooled (frozen)": (ptr.numpy(), pte.numpy()),
             "MLP on raw + T-JEPA tokens": (np.hstack([rtr, ftr.numpy()]), np.hstack([rte, fte.numpy()]))}
    results = {k: [_mlp(a, ytr, b, yte, s) for s in SEEDS] for k, (a, b) in feats.items()}
    from sklearn.ensemble import HistGradientBoostingClassifier
    results["HistGradientBoostingClassifier (raw)"] = [
        float(HistGradientBoostingClassifier(random_state=s).fit(rtr, ytr).score(rte, yte)) for s in SEEDS]
    spec = recipe.evaluate
    lines = [f"#### {name}: accuracy on {spec['dataset_name']} ({len(yte)} held-out rows)", "",
             f"Pretraining: {summary['steps']} steps × {recipe.train.batch_size} rows in "
             f"{summary['wall_seconds']:.0f} s ({rows_per_s:.0f} rows/s); embedding: {embed_rate:.0f} rows/s.", "",
             f"| model | accuracy (mean ± std over {len(SEEDS)} seeds) |", "| --- | ---: |"]
    lines += [f"| {k} | {statistics.mean(v):.4f} ± {statistics.pstdev(v):.4f} |" for k, v in results.items()]
    text = "\n".join(lines)
    card_results = [{"task": "tabular-classification", "task_name": "MLP on frozen T-JEPA tokens",
                     "dataset": spec["dataset"], "dataset_name": spec["dataset_name"], "split": "test",
                     "metric": "accuracy", "metric_name": f"accuracy (mean of {len(SEEDS)} MLP seeds)",
                     "value": round(statistics.mean(results["MLP on T-JEPA tokens (frozen, flattened)"]), 4)}]
    from zoo.cards import write_card
    write_card(model, repo_id=f"ssl-zoo/{name}", results=card_results,
               comparison="### Compared with baselines\n\n" + "\n".join(lines[2:]))
    return text, card_results


def main(out: Path = Path(__file__).parent / "results" / "tabular") -> str:
    tables = []
    for name in RECIPES:
        recipe = load_recipe(name)
        if recipe.data["train"].get("source") == "adult" and not (data_dir() / "adult" / "adult.data").is_file():
            tables.append(f"#### {name}\n\nskipped: UCI Adult not found under {data_dir()} (set ZOO_DATA)")
            continue
        tables.append(table(name, out)[0])
    text = "\n\n".join([f"### T-JEPA (tabular)\n\nMachine: {machine()}.", *tables,
                         "Paper anchors on Adult (Thimonier et al. 2025): MLP 0.825 → MLP + T-JEPA 0.866; "
                         "XGBoost 0.874."])
    print(text + "\n")
    return text


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results" / "tabular")
