"""The advice a result below its baseline comes with names only what the run did not do already."""

from __future__ import annotations

from pipelines.baseline import EVALUATE_REMEDIES, finetune_remedies, verdict


def test_below_the_baseline_advice_leaves_out_what_the_run_did():
    full = finetune_remedies("full", validated=True)
    assert "--mode full" not in full and "--eval-every" not in full and "--lr" in full
    assert "--eval-every" in finetune_remedies("full", validated=False)
    frozen = finetune_remedies("frozen", validated=False)
    assert "fine-tune the whole encoder (--mode full) with validation (--eval-every, --patience)" in frozen
    said = verdict(0.5, {"metric": "accuracy", "scores": {"mean": 0.9}}, what="the frozen encoder's",
                   remedies=EVALUATE_REMEDIES)["notice"]
    assert said.startswith("below the baseline") and "--eval-every" not in said and "zoo finetune" in said
