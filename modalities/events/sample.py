"""A tiny labelled event log for the conformance suite: card transactions of three customer segments in one CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.plugin import SampleData

SEGMENTS = {"grocer": [0.7, 0.1, 0.1, 0.1], "traveller": [0.1, 0.7, 0.1, 0.1], "gamer": [0.1, 0.1, 0.1, 0.7]}
SHOPS = ["food", "air", "fuel", "games"]


def sample_data(root: Path, per_class: int = 20, seed: int = 0) -> SampleData:
    """``root/transactions.csv``: ``client``, ``time`` (ISO dates), ``shop`` (a category whose mix differs by
    segment), ``amount`` and ``segment`` (the label, repeated on every event as users' logs hold it)."""
    import pandas as pd
    rng = np.random.default_rng(seed)
    rows = []
    for segment, mix in SEGMENTS.items():
        for i in range(per_class):
            n = int(rng.integers(15, 40))
            t = np.datetime64("2026-01-01T00:00") + np.cumsum(rng.integers(600, 86_400, n)).astype("timedelta64[s]")
            shops = rng.choice(SHOPS, n, p=mix)
            rows += [{"client": f"{segment}-{i}", "time": str(ti), "shop": s, "amount": round(float(a), 2),
                      "segment": segment} for ti, s, a in zip(t, shops, rng.lognormal(3, 1, n))]
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=seed)       # events arrive in any order
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    frame.to_csv(root / "transactions.csv", index=False)
    new = root / "new_transactions.csv"
    keep = frame[frame.client.isin(["grocer-0", "gamer-1"])].drop(columns="segment")
    keep.to_csv(new, index=False)
    return SampleData(data=root / "transactions.csv", recipe="events-coles-tiny", num_classes=len(SEGMENTS),
                      label_column="segment", predict_inputs=[new], predict_names=["gamer-1", "grocer-0"],
                      pretrain_overrides=["train.steps=4", "train.batch_size=16", "train.warmup_steps=1",
                                          "train.num_workers=0", "processor.entity_column=client",
                                          "pretraining.cnt_min=5", "pretraining.cnt_max=15"],
                      finetune_args=[])
