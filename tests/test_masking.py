import pytest
import torch

from zoo import masking


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_random_mask_exact_counts_inside_valid_lengths():
    lengths = torch.tensor([10, 7, 0, 4])
    m = masking.random_mask(4, 10, 0.5, generator=gen(), valid_lengths=lengths)
    assert m.dtype == torch.bool and m.shape == (4, 10)
    assert m.sum(dim=1).tolist() == [5, 4, 0, 2]           # round(0.5 * L): 5, 3.5→4, 0, 2
    assert not m[~masking.valid_mask(lengths, 10)].any()


def test_random_mask_count_and_determinism():
    a = masking.random_mask(3, 8, count=3, generator=gen(1))
    b = masking.random_mask(3, 8, count=3, generator=gen(1))
    assert torch.equal(a, b) and a.sum(dim=1).tolist() == [3, 3, 3]
    with pytest.raises(ValueError, match="exceeds"):
        masking.random_mask(2, 4, count=5, generator=gen())
    with pytest.raises(ValueError, match="exactly one"):
        masking.random_mask(2, 4, generator=gen())


def test_random_mask_is_uniform():
    m = masking.random_mask(20000, 5, count=1, generator=gen(2))
    freq = m.float().mean(dim=0)
    assert torch.allclose(freq, torch.full((5,), 0.2), atol=0.02)


def test_span_mask_spans_inside_valid_lengths():
    lengths = torch.tensor([100, 50, 23, 5, 0])
    m = masking.span_mask(5, 100, 0.65, 10, generator=gen(3), valid_lengths=lengths, min_spans=2)
    assert not m[~masking.valid_mask(lengths, 100)].any()
    # too short for its spans: starts {0, 1, 2} (range widened), frames 1-4 always hidden
    assert m[3, 1:5].all() and m[3].sum() >= 4 and m[4].sum() == 0
    # every hidden run is at least one span long (spans may merge) unless cut by the row's end
    for row, length in zip(m[:3], lengths[:3].tolist()):
        runs, run = [], 0
        for v in row[:length].tolist() + [False]:
            if v:
                run += 1
            elif run:
                runs.append(run)
                run = 0
        assert all(r >= 10 for r in runs)


def test_span_mask_number_of_spans_is_floor_p_l_over_span_plus_u():
    # mask_prob * L / span = 0.5 * 40 / 4 = 5 exactly: floor(5 + u) = 5 spans, non-overlap not guaranteed
    g = gen(4)
    m = masking.span_mask(1000, 40, 0.5, 4, generator=g)
    hidden = m.sum(dim=1)
    assert hidden.max() <= 20 and hidden.min() >= 4
    # with span 1 there is no overlap: exactly 5 hidden frames per row
    m1 = masking.span_mask(50, 40, 0.125, 1, generator=gen(5))
    assert (m1.sum(dim=1) == 5).all()


def test_span_mask_start_range_is_the_references():
    # L = 10, span 3: starts are drawn from [0, L - span - 1] = [0, 6] (fairseq's choice(sz - min_len)),
    # so frame 9 is never hidden, frame 8 only by a span starting at 6
    m = masking.span_mask(4000, 10, 0.3, 3, generator=gen(11))        # 0.3 * 10 / 3 = 1: one span a row
    assert (m.sum(dim=1) == 3).all()
    starts = m.float().argmax(dim=1)
    assert set(starts.tolist()) == set(range(7))
    assert not m[:, 9].any() and m[:, 8].any()
    # too many spans for the range: widened to [0, n] as the reference does. L = 5, span 3, n = 2:
    # range [0, 1] holds only 2 starts, so starts come from {0, 1, 2}: hidden {0..3}, {0..4} or {1..4}
    m = masking.span_mask(3000, 5, 0.0, 3, generator=gen(12), min_spans=2)
    patterns = {tuple(r) for r in m.int().tolist()}
    assert patterns == {(1, 1, 1, 1, 0), (1, 1, 1, 1, 1), (0, 1, 1, 1, 1)}


def test_span_mask_same_count_cuts_every_row_to_the_fewest():
    lengths = torch.tensor([60, 40, 25, 60])
    free = masking.span_mask(4, 60, 0.65, 5, generator=gen(13), valid_lengths=lengths, min_spans=2)
    same = masking.span_mask(4, 60, 0.65, 5, generator=gen(13), valid_lengths=lengths, min_spans=2,
                             same_count=True)
    fewest = int(free.sum(dim=1).min())
    assert len(set(free.sum(dim=1).tolist())) > 1
    assert (same.sum(dim=1) == fewest).all()                         # equal counts: the batch's smallest
    assert not (same & ~free).any()                                  # a subset of each row's own spans
    assert not same[~masking.valid_mask(lengths, 60)].any()


def test_span_mask_min_spans_and_hand_case():
    m = masking.span_mask(4, 12, 0.0, 3, generator=gen(6), min_spans=2)
    # two distinct starts, span 3 → between 4 and 6 hidden frames
    assert ((m.sum(dim=1) >= 4) & (m.sum(dim=1) <= 6)).all()
    # L == span, one span: the range [0, -1] is empty, widened to [0, 1]; a span at 0 hides the whole row,
    # one at 1 hides frames 1-2
    m = masking.span_mask(200, 3, 1.0, 3, generator=gen(7))
    assert {tuple(r) for r in m.int().tolist()} == {(1, 1, 1), (0, 1, 1)}


def test_tube_mask_shares_spatial_mask_over_time():
    m = masking.tube_mask(2, 4, 16, 0.75, generator=gen(8)).view(2, 4, 16)
    assert (m.sum(dim=2) == 12).all()
    assert (m == m[:, :1]).all()


def test_feature_subsets_disjoint_exact_sizes():
    s = masking.feature_subsets(6, 14, num_targets=3, target_size=2, context_size=5, generator=gen(9))
    assert s.targets.shape == (6, 3, 14)
    assert (s.targets.sum(dim=2) == 2).all()
    assert ((~s.context_hidden).sum(dim=1) == 5).all()
    assert (s.targets.sum(dim=1) <= 1).all()                       # targets disjoint from each other
    assert not (s.targets.any(dim=1) & ~s.context_hidden).any()    # and from the context
    with pytest.raises(ValueError):
        masking.feature_subsets(1, 5, 2, 2, 2, generator=gen())


def test_block_masks_1d():
    s = masking.block_masks_1d(3, 20, 2, 4, generator=gen(10))
    assert (s.targets.sum(dim=2) == 4).all()
    assert torch.equal(s.context_hidden, s.targets.any(dim=1))
    idx = s.targets.float().argmax(dim=2)
    for b in range(3):
        for k in range(2):
            i = int(idx[b, k])
            assert s.targets[b, k, i:i + 4].all()


def test_node_mask_counts_and_apply():
    nm = masking.node_mask(20, 0.5, 0.2, generator=gen(11))
    assert int(nm.mask.sum()) == 10 and int(nm.noise.sum()) == 2 and int(nm.token.sum()) == 8
    assert not (nm.token & nm.noise).any() and torch.equal(nm.token | nm.noise, nm.mask)
    x = torch.arange(20.0)[:, None].repeat(1, 3)
    token = torch.full((3,), -1.0)
    y = nm.apply(x, token)
    assert (y[nm.token] == -1).all()
    assert torch.equal(y[nm.noise], x[nm.noise_source[nm.noise]])
    assert torch.equal(y[~nm.mask], x[~nm.mask])
    with pytest.raises(ValueError, match="empty graph"):
        masking.node_mask(0, 0.5, generator=gen())


def test_subsequence_slices_within_bounds():
    lengths = torch.tensor([100, 10, 3, 1])
    starts, lens = masking.subsequence_slices(lengths, 5, 5, 20, generator=gen(12))
    assert starts.shape == lens.shape == (4, 5)
    assert (starts >= 0).all() and (starts + lens <= lengths[:, None]).all()
    assert ((lens >= lengths.clamp(max=5)[:, None]) & (lens <= lengths.clamp(max=20)[:, None])).all()
    assert (lens[3] == 1).all() and (lens[2] == 3).all()
    with pytest.raises(ValueError, match="sequence 1 has length 0"):
        masking.subsequence_slices(torch.tensor([4, 0]), 2, 1, 2, generator=gen())
