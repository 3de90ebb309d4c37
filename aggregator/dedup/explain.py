"""A readable breakdown of how one entry scores against another (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from rapidfuzz import fuzz

from .cluster import Clusterer, Item, Why
from .text import features


@dataclass(frozen=True, slots=True)
class Explanation:
    first: Item
    second: Item
    score: float
    threshold: float
    would_merge: bool
    why: Why
    shared: tuple[tuple[str, float], ...]  # shared tokens with their weight, strongest first
    only_first: tuple[str, ...]
    only_second: tuple[str, ...]
    title_ratio: float
    hours_apart: float


def explain_pair(clusterer: Clusterer, first: Item, second: Item) -> Explanation:
    s = clusterer.s
    score, why = clusterer.pair_score(first, second)
    fa = features(first.title, first.summary, s.summary_tokens, s.summary_weight)
    fb = features(second.title, second.summary, s.summary_tokens, s.summary_weight)
    shared = sorted(
        (
            (tok, round(clusterer.idf(tok) * fb.weights[tok], 3))
            for tok in fa.weights.keys() & fb.weights.keys()
        ),
        key=lambda kv: -kv[1],
    )
    return Explanation(
        first=first,
        second=second,
        score=score,
        threshold=s.threshold,
        would_merge=score >= s.threshold,
        why=why,
        shared=tuple(shared),
        only_first=tuple(sorted(fa.weights.keys() - fb.weights.keys())),
        only_second=tuple(sorted(fb.weights.keys() - fa.weights.keys())),
        title_ratio=fuzz.ratio(fa.title_key, fb.title_key),
        hours_apart=abs((second.published - first.published).total_seconds()) / 3600,
    )
