"""Issue #35: online quality while pretraining (RankMe, the k-NN probe) and label-efficiency curves."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pipelines.label_efficiency import fraction_curves, parse_fractions
from pipelines.quality import rankme
from tests.conftest import zoo_main


def test_rankme_matches_hand_computed_values():
    # singular values 3 and 1: p = (0.75, 0.25), RankMe = exp(-(0.75 ln 0.75 + 0.25 ln 0.25)) = 1.7548
    z = torch.tensor([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    assert rankme(z) == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))), rel=1e-5)
    assert rankme(z) == pytest.approx(1.7548, abs=1e-4)
    # equal singular values: the full rank; a rank-one matrix: 1; rotations do not change it
    assert rankme(torch.eye(5)) == pytest.approx(5.0, rel=1e-5)
    assert rankme(torch.ones(8, 4)) == pytest.approx(1.0, rel=1e-4)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(0)))
    z = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    assert rankme(z @ q) == pytest.approx(rankme(z), rel=1e-6)
    assert rankme(torch.zeros(3, 3)) == 1.0


def test_fraction_curves_use_the_same_stratified_subsets_for_every_feature_set():
    y = [0] * 10 + [1] * 10
    separable = torch.tensor([[float(c), 0.0] for c in y]) + 0.01 * torch.arange(20.0)[:, None]
    noise = torch.randn(20, 2, generator=torch.Generator().manual_seed(0))
    seen: list[tuple[str, list[int]]] = []

    def probe(tr, ytr, te, yte, seed=0):
        seen.append((str(tr.shape[0]), ytr))
        from pipelines.evaluate import linear_probe
        return linear_probe(tr, ytr, te, yte, seed=seed)
    out = fraction_curves({"good": (separable, separable), "noise": (noise, noise)}, y, y, [0.1, 0.5, 1.0], 2,
                          probe=probe)
    # 10% of 10 per class = one each; 50% = five each; every class kept
    assert out["labelled"] == [2, 10, 20] and out["fractions"] == [0.1, 0.5, 1.0] and out["seeds"] == 2
    assert out["curves"]["good"]["mean"] == [1.0, 1.0, 1.0]
    assert out["curves"]["good"]["std"][-1] == 0.0
    assert all(sorted(set(labels)) == [0, 1] for _, labels in seen)
    # fractions giving as few labels as the next (one per class) are one cell, said in the result
    merged = fraction_curves({"good": (separable, separable)}, y, y, [0.01, 0.05, 0.5], 1)
    assert merged["fractions"] == [0.05, 0.5] and merged["labelled"] == [2, 10] and merged["merged"] == [0.01]
    # the two feature sets were probed on the same subsets, in the same order
    half = len(seen) // 2
    assert [s[1] for s in seen[:half]] == [s[1] for s in seen[half:]]


def test_label_fractions_are_checked():
    assert parse_fractions("1,0.1, 0.5,0.1") == [0.1, 0.5, 1.0]
    for bad in ("0", "1.5", "a,b", ""):
        with pytest.raises(ValueError, match="--label-fractions"):
            parse_fractions(bad)


@pytest.fixture(scope="module")
def measured(toy_plugin, tmp_path_factory):
    """The toy recipe pretrained twice: the online probes every 2 steps, and off."""
    root = tmp_path_factory.mktemp("quality")
    for name, every in (("on", 2), ("off", 0)):
        assert zoo_main("pretrain", "toyseq-tiny", "--output", str(root / name), "--set",
                        f"train.quality_every={every}").returncode == 0
    return root


def test_online_probes_are_logged_and_leave_the_run_bit_for_bit(measured):
    from safetensors.torch import load_file
    rows = [json.loads(x) for x in (measured / "on" / "metrics.jsonl").read_text().splitlines()]
    logged = {r["step"]: (r["rankme"], r["knn"]) for r in rows if "rankme" in r}
    assert sorted(logged) == [2, 4, 6, 8, 10, 12]
    assert all(1.0 <= rank <= 32 and 0.0 <= knn <= 1.0 for rank, knn in logged.values())
    summary = json.loads((measured / "on" / "train_summary.json").read_text())
    history = summary["quality"]["history"]
    assert [h["step"] for h in history] == [0, 2, 4, 6, 8, 10, 12]           # random init first, for the card
    assert "held-out evaluation examples" in summary["quality"]["on"]
    off = [json.loads(x) for x in (measured / "off" / "metrics.jsonl").read_text().splitlines()]
    assert not any("rankme" in r for r in off) and "quality" not in json.loads(
        (measured / "off" / "train_summary.json").read_text())
    # measuring draws nothing from the run's generators and leaves it in training mode: the same weights
    a, b = (load_file(str(measured / n / "model" / "model.safetensors")) for n in ("on", "off"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in rows] == [r["loss"] for r in off]
    card = (measured / "on" / "model" / "README.md").read_text()
    assert "| online quality | RankMe" in card and "k-NN" in card and "quality_curve.png" in card
    assert (measured / "on" / "model" / "quality_curve.png").stat().st_size > 1000


def test_evaluate_draws_label_efficiency_curves_on_the_card(measured):
    model = measured / "on" / "model"
    out = zoo_main("evaluate", str(model), "--label-fractions", "0.2,1", "--seeds", "2")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)["label_efficiency"]
    assert report["fractions"] == [0.2, 1.0] and report["seeds"] == 2 and report["train_examples"] == 90
    assert report["labelled"][1] == 90 and 3 <= report["labelled"][0] <= 21
    assert {"pretrained", "random init"} <= set(report["curves"])
    for curve in report["curves"].values():
        assert all(0.0 <= m <= 1.0 for m in curve["mean"]) and len(curve["std"]) == 2
    # at fraction 1 every seed probes the same examples: the full-data probe of the same report
    assert report["curves"]["pretrained"]["mean"][1] == pytest.approx(
        json.loads(out.stdout)["pretrained"]["linear_probe"], abs=1e-4)
    card = (model / "README.md").read_text()
    assert "### Label efficiency" in card and "![label efficiency](label_efficiency.png)" in card
    assert (model / "label_efficiency.png").is_file()
    # with --output elsewhere the card links its own copy, never a path outside the folder
    other = model.parent / "elsewhere"
    assert zoo_main("evaluate", str(model), "--label-fractions", "1", "--seeds", "1", "--output",
                    str(other)).returncode == 0
    card = (model / "README.md").read_text()
    assert "](label_efficiency.png)" in card and "elsewhere" not in card and "± " not in card.split(
        "### Label efficiency")[1]
    from zoo.hub import REPO_FILES
    assert {"label_efficiency.png", "quality_curve.png"} <= set(REPO_FILES)       # published with the card
    bad = zoo_main("evaluate", str(model), "--label-fractions", "0,2")
    assert bad.returncode != 0 and "--label-fractions" in bad.stderr


def test_weighted_knn_votes_follow_the_hand_computed_weights():
    from pipelines.evaluate import knn_accuracy
    # one neighbour of label 1 at cos 1.0, two of label 0 at cos 0.6: the majority says 0; weighted by
    # exp(cos / 0.07) = e^14.29 against 2 e^8.57, label 1 wins
    train = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.6, -0.8]])
    test = torch.tensor([[1.0, 0.0]])
    assert knn_accuracy(train, [1, 0, 0], test, [1], k=3) == 0.0
    assert knn_accuracy(train, [1, 0, 0], test, [1], k=3, temperature=0.07) == 1.0
    # at a temperature where 2 exp(0.6 / T) > exp(1 / T), i.e. T > 0.4 / ln 2 = 0.577, the two win again
    assert knn_accuracy(train, [1, 0, 0], test, [1], k=3, temperature=1.0) == 0.0


def test_balanced_knn_corrects_for_the_class_prior_and_averages_recalls():
    from pipelines.probes import knn_accuracy
    # reference: one of class 1 (share 1/4) and three of class 0 (share 3/4). Query [1, 0] has cos 0.8 to the
    # class-1 example and 0.6 to each class-0 one: at T = 1 the votes are e^0.8 = 2.23 against 3 e^0.6 = 5.47
    # (class 0); divided by the shares, 2.23 / 0.25 = 8.9 against 5.47 / 0.75 = 7.3 (class 1). Query [0, 1] is
    # the other way round (cos 0.6 and 0.8) and is class 0 either way.
    train = torch.tensor([[0.8, 0.6], [0.6, 0.8], [0.6, 0.8], [0.6, 0.8]])
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = [1, 0, 0, 0]
    assert knn_accuracy(train, labels, query, [1, 0], k=4, temperature=1.0) == 0.5       # both called 0
    assert knn_accuracy(train, labels, query, [1, 0], k=4, temperature=1.0, balanced=True) == 1.0
    # balanced accuracy: the mean of the per-class recalls, not of the examples: 3 class-0 queries right and
    # 1 class-1 query wrong score 0.75 plainly, (1 + 0) / 2 balanced
    q = torch.tensor([[0.0, 1.0]] * 4)
    assert knn_accuracy(train, labels, q, [0, 0, 0, 1], k=4, temperature=1.0) == 0.75
    assert knn_accuracy(train, labels, q, [0, 0, 0, 1], k=4, temperature=1.0, balanced=True) == 0.5


def test_standardised_knn_weighs_dimensions_as_a_standardised_probe_does():
    from pipelines.probes import knn_accuracy, standardise
    # dimension 0 is large and says nothing of the label, dimension 1 is small and does, dimension 2 is constant
    # over the reference. Reference mean [0, 0, 7], deviations [100, 1, 0]: standardised, a = [-1, 1, 0] and
    # c = [1, -1, 0]; the query [50, 2, 1000] becomes [0.5, 2, 0] (the constant dimension carries nothing: 0).
    train = torch.tensor([[-100.0, 1.0, 7.0], [100.0, -1.0, 7.0]])
    query = torch.tensor([[50.0, 2.0, 1000.0]])
    a, q = standardise(train, query)
    assert torch.equal(a, torch.tensor([[-1.0, 1.0, 0.0], [1.0, -1.0, 0.0]]))
    assert torch.equal(q, torch.tensor([[0.5, 2.0, 0.0]]))
    # raw cosine: the query's nearest is c (50 * 100 dominates): label 0, wrong. Standardised: cos to a is
    # (-0.5 + 2) / (|q| |a|) > 0 and to c (0.5 - 2) / (...) < 0: label 1, right
    assert knn_accuracy(train, [1, 0], query, [1], k=1) == 0.0
    assert knn_accuracy(train, [1, 0], query, [1], k=1, standardised=True) == 1.0


def test_self_agreement_reads_how_alike_two_halves_of_the_final_probes_examples_rank_the_checkpoints():
    from bench.online_quality import self_agreement
    # each checkpoint right on none, half and all of every example: any two halves rank them 0 < 0.5 < 1
    apart = [{"final_cv_correct": [v] * 10} for v in (0.0, 0.5, 1.0)]
    assert self_agreement(apart) == (1.0, 1.0)
    # two checkpoints right on opposite examples: halves {0,1}|{2,3} rank them oppositely (Spearman -1); the other
    # splits give both checkpoints 0.5 on each half (tied throughout), which counts as below 0.8
    crossed = [{"final_cv_correct": [1, 1, 0, 0]}, {"final_cv_correct": [0, 0, 1, 1]}]
    median, share = self_agreement(crossed)
    assert median == pytest.approx(-1.0) and share == 0.0
    # one example against the other three: whichever is drawn, the two sides order the checkpoints oppositely
    assert self_agreement(crossed, size=1) == (pytest.approx(-1.0), 0.0)
    assert self_agreement([{"final": 0.5}]) is None


def test_chance_of_at_least_k_independent_events_matches_hand_computed_values():
    from bench.online_quality import chance_of_at_least
    assert chance_of_at_least([0.5, 0.5], 1) == pytest.approx(0.75)
    assert chance_of_at_least([0.5, 0.5], 2) == pytest.approx(0.25)
    assert chance_of_at_least([1.0, 1.0, 0.2], 3) == pytest.approx(0.2)
    assert chance_of_at_least([0.9, 0.8, 0.3], 2) == pytest.approx(0.9 * 0.8 + 0.9 * 0.2 * 0.3 + 0.1 * 0.8 * 0.3)
    assert chance_of_at_least([0.4], 0) == pytest.approx(1.0)
