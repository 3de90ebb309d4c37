"""What the clusterer's users need without the clusterer itself: its settings (read with every
configuration) and the garbage collector's pause. ``dedup.cluster`` (the clusterer, compiled,
with rapidfuzz: ~30 ms to import here) is imported only where entries are placed, so a query,
or a round with nothing to place, never loads it.
"""

from __future__ import annotations

import gc
import hashlib
import importlib
import os
from contextlib import contextmanager

import msgspec


@contextmanager
def gc_paused():
    """Pause the cyclic garbage collector for a bounded batch of work (reference counting
    still frees everything acyclic); it runs again, if it was on, when the block ends.

    What the block made and kept is taken to be long-lived (the clusterer's state): it is
    moved to the collector's oldest generation as the block ends (``gc.freeze`` then
    ``gc.unfreeze``, two list splices). Left in the youngest, where new objects start, the
    first collection after the block walked them all, and each older generation's first
    collection again: 67-75 ms with the process waiting, at the end of the clustering stage
    of the bench's 1000-feed cold round. (Not done when the program froze objects of its
    own: unfreezing would release them too.)"""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if not gc.get_freeze_count():
            gc.freeze()
            gc.unfreeze()
        if was:
            gc.enable()


def source_digest(names: tuple[str, ...]) -> str | None:
    """blake2b of these files of this folder, in order (setup.py writes the same into the
    compiled build it makes from them); None when one cannot be read."""
    h = hashlib.blake2b(digest_size=16)
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        for name in names:
            with open(os.path.join(here, name), "rb") as f:
                h.update(f.read())
    except OSError:
        return None
    return h.hexdigest()


def compiled_build(module: str, names: tuple[str, ...]):
    """The compiled module ``module`` of this folder (setup.py builds ``_ccluster`` from
    cluster.py and ``_ctext`` from text.py, each typed by its .pxd), or None with the reason it
    is not used: not built, AGGREGATOR_PURE_PYTHON=1, or built from other versions of the files
    ``names`` (an edited source is never shadowed by an old build)."""
    if os.environ.get("AGGREGATOR_PURE_PYTHON") == "1":
        return None, "AGGREGATOR_PURE_PYTHON=1"
    try:
        build = importlib.import_module(f"{__package__}.{module}")
    except ImportError:
        return None, "not built (no C compiler or Cython at install time)"
    if getattr(build, "SOURCE_DIGEST", None) != source_digest(names):
        return None, f"built from another version of {names[0]} (reinstall to rebuild it)"
    return build, ""


class ClusterSettings(msgspec.Struct, frozen=True):
    # An entry joins the best story scoring at least this (0..1).
    threshold: float = 0.2
    # Two stories whose profiles match at least this well (both ways) merge.
    merge_threshold: float = 0.3
    # Stories idle longer than this (hours of entry time) are no longer candidates.
    window_hours: float = 72.0
    # A token is part of a story's core when at least this share of its members have it.
    core_share: float = 0.25
    # A token found in this share of a story's members (times 1/kappa) counts fully.
    kappa: float = 3.0
    # Weight of a token no entry had before, relative to a seen one.
    unseen_weight: float = 0.6
    # Weight of summary tokens relative to title tokens, and how many summary tokens are used.
    summary_weight: float = 0.5
    summary_tokens: int = 60
    # Score multiplier when entry and story name only different years / decimal figures.
    conflict_penalty: float = 0.5
    # Hours of distance from a story that cost nothing, and the half-life of the score beyond.
    time_grace_hours: float = 6.0
    time_half_life_hours: float = 6.0
    # Tokens found in more active stories than this are too common to look up (they still
    # count when candidates are verified). Bounds the work per entry, whatever the store's size.
    max_postings: int = 30
    # Only this many of an entry's most informative tokens are looked up in the index.
    lookup_tokens: int = 8
    # Candidate stories verified per entry (best by indexed weight).
    candidates: int = 3
    # Stories with fewer members than this need two shared words, not one, to take an entry
    # at full score (one shared word between two short titles is weak evidence).
    small_story: int = 3
    # rapidfuzz ratio (0-100) to the representative title at or above which a candidate
    # story is taken as a near-duplicate match even when its profile score is lower.
    near_duplicate_ratio: float = 90.0

    def validate(self) -> None:
        limits = {
            "threshold": (0, 1),
            "merge_threshold": (0, 1),
            "window_hours": (1, 720),
            "core_share": (0, 1),
            "kappa": (1, 100),
            "unseen_weight": (0, 1),
            "summary_weight": (0, 1),
            "summary_tokens": (0, 10_000),
            "conflict_penalty": (0, 1),
            "time_grace_hours": (0, 720),
            "time_half_life_hours": (0.1, 720),
            "max_postings": (1, 1_000_000),
            "lookup_tokens": (1, 1000),
            "candidates": (1, 100),
            "near_duplicate_ratio": (0, 101),
            "small_story": (0, 1000),
        }
        for name, (lo, hi) in limits.items():
            value = getattr(self, name)
            if not lo <= value <= hi:
                raise ValueError(
                    f"cluster.{name} = {value!r} is out of range; use a value in [{lo}, {hi}]"
                )
