"""A tiny labelled event log for the conformance suite: card transactions of three customer segments in one CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.plugin import SampleData

SEGMENTS = {"grocer": [0.7, 0.1, 0.1, 0.1], "traveller": [0.1, 0.7, 0.1, 0.1], "gamer": [0.1, 0.1, 0.1, 0.7]}
SHOPS = ["food", "air", "fuel", "games"]


def _clients(names: list[tuple[str, str]], rng: np.random.Generator) -> list[dict]:
    rows = []
    for client, segment in names:
        n = int(rng.integers(15, 40))
        t = np.datetime64("2026-01-01T00:00") + np.cumsum(rng.integers(600, 86_400, n)).astype("timedelta64[s]")
        shops = rng.choice(SHOPS, n, p=SEGMENTS[segment])
        rows += [{"client": client, "time": str(ti), "shop": s, "amount": round(float(a), 2), "segment": segment}
                 for ti, s, a in zip(t, shops, rng.lognormal(3, 1, n))]
    return rows


def sample_data(root: Path, per_class: int = 20, seed: int = 0) -> SampleData:
    """``root/transactions.csv``: ``client``, ``time`` (ISO dates), ``shop`` (a category whose mix differs by
    segment), ``amount`` and ``segment`` (the label, repeated on every event as users' logs hold it), rows in any
    order; ``new_transactions.csv``: two clients not in it, without the label."""
    import pandas as pd
    rng = np.random.default_rng(seed)
    known = [(f"{segment}-{i}", segment) for segment in SEGMENTS for i in range(per_class)]
    frame = pd.DataFrame(_clients(known, rng)).sample(frac=1.0, random_state=seed)     # events arrive in any order
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    frame.to_csv(root / "transactions.csv", index=False)
    new = root / "new_transactions.csv"
    pd.DataFrame(_clients([("new-grocer", "grocer"), ("new-gamer", "gamer")], rng)).drop(columns="segment") \
        .to_csv(new, index=False)
    return SampleData(data=root / "transactions.csv", recipe="events-coles-tiny", num_classes=len(SEGMENTS),
                      label_column="segment", predict_inputs=[new], predict_names=["new-gamer", "new-grocer"],
                      pretrain_overrides=["train.steps=4", "train.batch_size=16", "train.warmup_steps=1",
                                          "train.num_workers=0", "processor.entity_column=client",
                                          "pretraining.cnt_min=5", "pretraining.cnt_max=15"],
                      finetune_args=[])
