"""Clustering metrics on tiny cases whose answers are worked out by hand."""

import math

import pytest

from aggregator.dedup import metrics


def test_perfect_clustering():
    gold = ["a", "a", "b", "b", "c"]
    pred = [1, 1, 2, 2, 3]
    assert metrics.pairwise(gold, pred) == (1.0, 1.0, 1.0)
    assert metrics.bcubed(gold, pred) == (1.0, 1.0, 1.0)
    assert metrics.nmi(gold, pred) == pytest.approx(1.0)
    assert metrics.ari(gold, pred) == pytest.approx(1.0)


def test_everything_in_one_cluster():
    gold = ["a", "a", "b", "b"]
    pred = [1, 1, 1, 1]
    # pairs: 6 predicted, 2 true -> precision 1/3, recall 1
    p, r, f = metrics.pairwise(gold, pred)
    assert (p, r) == (pytest.approx(1 / 3), 1.0)
    assert f == pytest.approx(0.5)
    # B-cubed: every item's cluster is half right -> precision 0.5, recall 1
    assert metrics.bcubed(gold, pred)[:2] == (pytest.approx(0.5), pytest.approx(1.0))
    assert metrics.nmi(gold, pred) == pytest.approx(0.0)
    assert metrics.ari(gold, pred) == pytest.approx(0.0)


def test_all_singletons():
    gold = ["a", "a", "b", "b"]
    pred = [1, 2, 3, 4]
    assert metrics.pairwise(gold, pred)[:2] == (1.0, 0.0)
    assert metrics.bcubed(gold, pred)[:2] == (pytest.approx(1.0), pytest.approx(0.5))


def test_one_item_misplaced():
    gold = [0, 0, 1, 1]
    pred = [0, 0, 0, 1]
    # pairwise: predicted pairs 3 (within {0,1,2}), true among them 1 (0-1); gold pairs 2
    p, r, _ = metrics.pairwise(gold, pred)
    assert (p, r) == (pytest.approx(1 / 3), pytest.approx(1 / 2))
    # B-cubed precision: items 0,1: 2/3 each; item 2: 1/3; item 3: 1 -> (2/3+2/3+1/3+1)/4
    bp, br, _ = metrics.bcubed(gold, pred)
    assert bp == pytest.approx((2 / 3 + 2 / 3 + 1 / 3 + 1) / 4)
    # recall: items 0,1: 2/2; item 2: 1/2; item 3: 1/2 -> 3/4
    assert br == pytest.approx(0.75)
    # ARI by hand: index 1, expected 3*2/6 = 1, max (2+3)/2 = 2.5 -> (1-1)/(2.5-1) = 0
    assert metrics.ari(gold, pred) == pytest.approx(0.0)
    # NMI by hand (natural log): H(gold)=ln 2, H(pred)=-(3/4 ln 3/4 + 1/4 ln 1/4)
    hg = math.log(2)
    hp = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    # cells (gold, pred): (0,0)=2, (1,0)=1, (1,1)=1; term = c/n * ln(c*n / (|gold| * |pred|))
    mi = (
        0.5 * math.log(2 * 4 / (2 * 3))
        + 0.25 * math.log(1 * 4 / (2 * 3))
        + 0.25 * math.log(1 * 4 / (2 * 1))
    )
    assert metrics.nmi(gold, pred) == pytest.approx(mi / ((hg + hp) / 2))


def test_length_mismatch_is_refused():
    with pytest.raises(ValueError):
        metrics.pairwise([1, 2], [1])
