"""Clustering quality metrics over two labelings of the same items (pure, no numpy needed).

All take ``gold`` and ``pred``: sequences of labels, one per item, in the same order.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence


def _comb2(n: int) -> int:
    return n * (n - 1) // 2


def contingency(gold: Sequence[Hashable], pred: Sequence[Hashable]):
    if len(gold) != len(pred):
        raise ValueError("gold and pred must label the same items")
    return Counter(zip(gold, pred, strict=True)), Counter(gold), Counter(pred)


def pairwise(gold, pred) -> tuple[float, float, float]:
    """Precision, recall and F1 over pairs of items put in the same cluster."""
    joint, g, p = contingency(gold, pred)
    tp = sum(_comb2(n) for n in joint.values())
    pred_pairs = sum(_comb2(n) for n in p.values())
    gold_pairs = sum(_comb2(n) for n in g.values())
    precision = tp / pred_pairs if pred_pairs else 1.0
    recall = tp / gold_pairs if gold_pairs else 1.0
    return precision, recall, _f1(precision, recall)


def bcubed(gold, pred) -> tuple[float, float, float]:
    """B-cubed precision, recall and F1 (Bagga & Baldwin), averaged over items."""
    joint, g, p = contingency(gold, pred)
    n = len(gold)
    if n == 0:
        return 1.0, 1.0, 1.0
    precision = sum(c * c / p[pl] for (_, pl), c in joint.items()) / n
    recall = sum(c * c / g[gl] for (gl, _), c in joint.items()) / n
    return precision, recall, _f1(precision, recall)


def nmi(gold, pred) -> float:
    """Normalized mutual information, arithmetic-mean normalization (as scikit-learn's default)."""
    joint, g, p = contingency(gold, pred)
    n = len(gold)
    if n == 0:
        return 1.0
    mi = sum(c / n * math.log(c * n / (g[gl] * p[pl])) for (gl, pl), c in joint.items())
    hg = -sum(c / n * math.log(c / n) for c in g.values())
    hp = -sum(c / n * math.log(c / n) for c in p.values())
    if hg == 0 and hp == 0:
        return 1.0
    denom = (hg + hp) / 2
    return max(0.0, min(1.0, mi / denom)) if denom else 0.0


def ari(gold, pred) -> float:
    """Adjusted Rand index."""
    joint, g, p = contingency(gold, pred)
    n = len(gold)
    index = sum(_comb2(c) for c in joint.values())
    sum_g = sum(_comb2(c) for c in g.values())
    sum_p = sum(_comb2(c) for c in p.values())
    total = _comb2(n)
    if total == 0:
        return 1.0
    expected = sum_g * sum_p / total
    maximum = (sum_g + sum_p) / 2
    if maximum == expected:
        return 1.0
    return (index - expected) / (maximum - expected)


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0
