"""Incremental story clustering. Pure and deterministic: state lives in memory, time comes from
the entries themselves, and the same sequence of entries always gives the same stories.

    clusterer = Clusterer(settings)
    a = clusterer.add(Item(entry_id, source, url, title, summary, published))
    a.story_id, a.score, a.reason
    clusterer.resolve(a.story_id)        # where that story lives now, after merges

How an entry finds its story:

1. Exact layer: an entry whose canonical URL is already in an active story joins it
   ("same-url").
2. Candidates, sublinearly: an inverted index from tokens to the stories that contain them.
   Only stories active within ``window_hours`` of the entry's time are kept in memory (older
   ones are evicted), and tokens found in more than ``max_postings`` of them are not looked
   up. Scoring is term-at-a-time over those postings, so the cost depends on the entry's
   informative tokens, not on how many entries the store holds.
3. The entry is scored against the story itself, never against one member (no chaining).
   Each story keeps a token profile: in what share of its members each token occurs.
   - ``coverage``: the share of the entry's informative weight found in the story's profile.
   - ``core``: the share of the story's core (tokens in at least ``core_share`` of its
     members) that the entry contains.
   - score = sqrt(coverage * core). Tokens weigh by inverse *story* frequency: a token spread
     over many stories ("says", "new", "report") says little; one concentrated in a few stories
     ("Titanfall", "Antofagasta") says much. Tokens never seen before weigh ``unseen_weight``.
4. Other signals lower the score: the entry and the story name only different years, or only
   different decimal figures (a 2017 vs a 2018 strike, a 6.8 vs a 5.1 quake), and distance in
   time beyond ``time_grace_hours`` (halving every ``time_half_life_hours``).
5. The entry joins the best story scoring at least ``threshold``; else it starts a story.
6. Fragments consolidate: when a story reaches 2, 4, 8, 16 ... members its whole profile is
   scored against the other active stories, both ways, and the two merge at
   ``merge_threshold``. This is a profile-to-profile decision, so one stray member cannot drag
   two stories together. Pairs of stories the user split apart are never merged again.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
import pickle
import sys
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from rapidfuzz import fuzz

from . import base as _base
from .base import ClusterSettings, gc_paused  # (here too: the clusterer's own names)
from .text import Features, features

_by_weight = operator.attrgetter("w")
_NONE: frozenset[str] = frozenset()
# whether this is the compiled copy, which setup.py builds as ``_ccluster`` (by its name, as
# text.py tells its own: importing Cython's shadow module to ask it took 6.6 ms)
COMPILED = __name__.rpartition(".")[2] == "_ccluster"
SORT_SPACE = 64  # the most records Clusterer._heaviest_first sorts in its own arrays


def _count(into: dict[str, int] | None, more: dict[str, int]) -> dict[str, int]:
    """Add the counts ``more`` to ``into`` (made when None); returns it."""
    if into is None:
        return dict(more)
    for key, c in more.items():
        into[key] = into.get(key, 0) + c
    return into


def _shares_two(a: dict, b: dict) -> bool:
    """Whether the dicts have at least two keys in common (without building their
    intersection: a young story's tokens against an entry's, for every candidate)."""
    if len(a) > len(b):
        a, b = b, a
    found = False
    for key in a:
        if key in b:
            if found:
                return True
            found = True
    return False


def _shares_two_of(seq: tuple, b: dict) -> bool:
    """``_shares_two`` for a one-member story's tokens (a tuple). A copy typed for tuples:
    one untyped function for both (iterating either through the generic protocol) took 0.5%
    more instructions to place 10,000 of the bench's entries."""
    found = False
    for key in seq:
        if key in b:
            if found:
                return True
            found = True
    return False


def _top(touched: list, k: int) -> list:
    """The k stories with the largest ``acc``, largest first, ties in the order they were
    first touched (what a stable sort would keep), in one pass: an entry touches some 70
    stories, of which 3 are verified."""
    top = []
    for st in touched:
        a = st.acc
        i = len(top)
        if i >= k:
            o = top[i - 1]  # (a typed local: the compiled build reads o.acc as a C double)
            if a <= o.acc:
                continue
        while i > 0:
            o = top[i - 1]
            if o.acc >= a:
                break
            i -= 1
        top.insert(i, st)
        if len(top) > k:
            top.pop()
    return top


IDF_EPOCH = 1024  # adds between refreshes of the memoized token weights
EPOCH_SHARE = 8  # a longer epoch in a big window: 1/8 of its active stories
NEAR_DUPLICATE_MIN_COVERAGE = 0.3  # titles this far apart are not compared character-wise


@dataclass(slots=True)  # (not frozen: one is made per entry placed, in 0.25 us against 1.46 us)
class Item:
    entry_id: int
    source: str  # the outlet (feed), for distinct-source counts
    url: str | None
    title: str
    summary: str
    published: datetime
    # its features when they were computed already, for the clusterer's settings (in another
    # process: ClusteringStage), as ``text.pack_many`` gives them; the title and summary are
    # then not read. (Unpacked as each is placed: 10,000 of the bench's items waiting to be
    # placed, packed with their tokens as text, held 6.8 MB, against 12.3 MB with their
    # Features, and 10.7 MB with their text instead.)
    features: tuple | None = field(default=None, compare=False, repr=False)


class Assignment(NamedTuple):  # a tuple: one is made per entry, cheaply
    entry_id: int
    story_id: int
    score: float
    reason: str  # "new", "same-url", "manual", "near-duplicate ...", "similar: ..."


@dataclass(frozen=True, slots=True)
class Why:
    """The signals behind one score; rendered only for the story an entry joins."""

    coverage: float
    core: float
    title_ratio: float = 0.0
    different_years: bool = False
    different_figures: bool = False
    hours_apart: float = 0.0

    def __str__(self) -> str:
        parts = [f"coverage {self.coverage:.2f}", f"core {self.core:.2f}"]
        if self.title_ratio:
            parts.append(f"title {self.title_ratio:.0f}% alike")
        if self.different_years:
            parts.append("different years")
        if self.different_figures:
            parts.append("different figures")
        if self.hours_apart >= 1:
            parts.append(f"{self.hours_apart:.0f}h apart")
        return "similar: " + ", ".join(parts)


_STORY_FIELDS = (  # StoryState's attributes (the compiled class has no __slots__ to read)
    "id",
    "first",  # epoch seconds
    "last",
    "n",
    # token -> the sum of its weights over the members; None while the story has one member
    "tokens",
    # ... whose tokens are this tuple instead, the title's first (weight 1), then the summary's
    # (summary_weight): a dict of the same took 2.5x the memory (883 bytes against 346 for the
    # bench's entries), and most stories in a window have one member
    "single",
    "n_title",  # how many of ``single`` are the title's (kept after the story grows: see _core)
    # years / decimal figures its members name, with counts; None until one does (most
    # stories never do, and an empty dict each costs memory for every story in the window)
    "years",
    "decimals",
    "title_key",
    "urls",
    "core",  # cached {token: share} (one member's: a tuple, see _core), refreshed as n grows
    "core_n",  # members when the core was computed
    "core_weights",  # (epoch, weights of the core's tokens in its order, sum)
    "evicted",  # left the window; posting lists drop it lazily
)
# Scratch space of one scoring pass (never saved): the weight a pass accumulated for the story,
# valid while ``mark`` is that pass's stamp. A field of the story, not a dict keyed by it: the
# pass adds to it once for each story in each posting list it reads, and the dict's get and set
# took 5% of the instructions of placing the bench's entries.
_SCRATCH = ("acc", "mark")


class StoryState:
    """One active story as the clusterer sees it. A plain class, not a dataclass: the compiled
    build makes it a C struct (cluster.pxd), and compares stories by identity as this does."""

    __slots__ = _STORY_FIELDS + _SCRATCH

    def __init__(
        self,
        id: int,
        first: float,
        last: float,
        n: int = 0,
        tokens: dict[str, float] | None = None,
        years: dict[str, int] | None = None,
        decimals: dict[str, int] | None = None,
        title_key: str = "",
    ):
        self.id = id
        self.first = first
        self.last = last
        self.n = n
        self.tokens = tokens
        self.single: tuple[str, ...] | None = None
        self.n_title = 0
        self.years = years
        self.decimals = decimals
        self.title_key = title_key
        self.urls: list[str] = []
        self.core: dict[str, float] | tuple[str, ...] | None = None
        self.core_n = 0
        self.core_weights: tuple[int, tuple, float] | None = None
        self.evicted = False
        self.acc = 0.0
        self.mark = 0

    def __repr__(self) -> str:
        return f"StoryState(id={self.id}, n={self.n}, title_key={self.title_key!r})"


# A snapshot's token weights are read back with equal floats shared (a story's weights take few
# distinct values; a float object each took 40 MB more for 50,000 entries): _unpack_stories
_FLOATS: dict[float, float] = {}
_ONE = 1.0  # (one float object for every title token's weight in _token_dict)


class TokenStats:
    """Everything the clusterer keeps about a token, in one record: an entry's tokens are
    looked up once, when it is read (``Clusterer._unpack``), and each step of placing it reads
    the records. Kept in dicts by token (statistics, index, stale counts), they were five
    lookups of each token of each entry in dicts of every token in the window, and those
    lookups missed the cache: a fifth of the time of placing the bench's entries.

    The entries in the window with it (``df``), the active stories with it (``sf``), its idf
    as memoized in epoch ``epoch`` (valid while that is the clusterer's), the token itself (the
    one string every story with it shares), its index entry (``posting``: the active stories
    with it, and evicted ones flagged; None while it is not indexed) and how many evicted
    stories that list may still hold (``stale``). ``w`` is scratch space of one scoring pass
    (the token's weight in the entry being placed). A record whose counts are zero holds only
    a memoized idf (of a token no entry in the window has, or had when it was computed)."""

    __slots__ = ("df", "epoch", "gone", "idf", "posting", "sf", "stale", "tok", "w")

    def __init__(self, df: int = 0, sf: int = 0, idf: float = 0.0, epoch: int = -1, tok: str = ""):
        self.df = df
        self.sf = sf
        self.idf = idf
        self.epoch = epoch
        self.tok = tok
        self.posting: list[StoryState] | None = None
        self.stale = 0
        self.w = 0.0
        self.gone = False  # dropped from the statistics (a batch's vocabulary may still hold it)


# -- the snapshot's chunks (Clusterer.dump and load) ----------------------------------------------
#
# A chunk of stories is a tuple of columns: per story its id, times, counts and kinds side by
# side in arrays, and its tokens (its one member's tuple, or its dict's keys with their weights
# in another array) one after another in one array of numbers, each a token's place in a list of
# tokens: the statistics' (the snapshot's head), and the tokens a chunk adds to it (``new``, in
# the chunk: a story's token always has statistics, but that is not relied on). A pickle of the
# stories themselves wrote each token as a string, and reading it back interned every one.
_DICT, _SINGLE, _EVICTED, _CW = 1, 2, 4, 8  # a story's kind bits; its core's kind: << 4
_CORE_NONE, _CORE_SHARED, _CORE_TUPLE, _CORE_DICT = 0, 1, 2, 3


def _number(tok: str, index: dict, table: list, new: list) -> int:
    """``tok``'s number, given it when it has none yet."""
    i = index.get(tok)
    if i is None:
        i = index[tok] = len(table)
        table.append(tok)
        new.append(tok)
    return i


def _zeros(typecode: str, n: int) -> array:
    return array(typecode, bytes(array(typecode).itemsize * n))


def _pack_stories(part: list, index: dict, table: list) -> tuple:
    """The stories ``part`` as a chunk (see above). Its arrays are sized first, then written in
    place (the compiled build writes through typed views): gathered in lists and made arrays
    at the end, the conversion took 40% of the time."""
    n = len(part)
    n_lens = n_toks = n_weights = n_cores = n_core_toks = n_core_weights = n_cw = n_cw_w = 0
    for k in range(n):
        st = part[k]
        tokens, single, core = st.tokens, st.single, st.core
        if tokens is not None:
            n_lens += 1
            n_toks += len(tokens)
            n_weights += len(tokens)
        elif single is not None:
            n_lens += 1
            n_toks += len(single)
        if core is not None and core is not tokens and core is not single:
            n_cores += 1
            n_core_toks += len(core)
            if type(core) is not tuple:
                n_core_weights += len(core)
        if st.core_weights is not None:
            n_cw += 1
            n_cw_w += len(st.core_weights[1])
    new: list = []
    ids = _zeros("q", n)
    times = _zeros("d", 2 * n)
    counts = _zeros("q", 3 * n)
    kinds = bytearray(n)
    toks = _zeros("I", n_toks)
    lens = _zeros("q", n_lens)
    weights = _zeros("d", n_weights)
    core_toks = _zeros("I", n_core_toks)
    core_lens = _zeros("q", n_cores)
    core_weights = _zeros("d", n_core_weights)
    cw_epochs = _zeros("q", n_cw)
    cw_lens = _zeros("q", n_cw)
    cw_totals = _zeros("d", n_cw)
    cw_weights = _zeros("d", n_cw_w)
    url_counts = _zeros("q", n)
    # (views: the compiled build writes the arrays' items in place through them)
    ids_v, times_v, counts_v, toks_v, lens_v, weights_v = ids, times, counts, toks, lens, weights
    core_toks_v, core_lens_v, core_weights_v = core_toks, core_lens, core_weights
    cw_epochs_v, cw_lens_v, cw_totals_v = cw_epochs, cw_lens, cw_totals
    url_counts_v = url_counts
    keys: list = []
    marks: dict = {}
    urls: list = []
    o = li = w = co = cli = cwo = cwi = cwwo = 0  # where the next story's data goes in each
    for k in range(n):
        st = part[k]
        ids_v[k] = st.id
        times_v[2 * k] = st.first
        times_v[2 * k + 1] = st.last
        counts_v[3 * k] = st.n
        counts_v[3 * k + 1] = st.n_title
        counts_v[3 * k + 2] = st.core_n
        tokens, single, core = st.tokens, st.single, st.core
        kind = _EVICTED if st.evicted else 0
        if tokens is not None:
            kind |= _DICT
            lens_v[li] = len(tokens)
            li += 1
            for tok, v in tokens.items():
                i = index.get(tok)
                toks_v[o] = i if i is not None else _number(tok, index, table, new)
                weights_v[w] = v
                o += 1
                w += 1
        elif single is not None:
            kind |= _SINGLE
            lens_v[li] = len(single)
            li += 1
            for tok in single:
                i = index.get(tok)
                toks_v[o] = i if i is not None else _number(tok, index, table, new)
                o += 1
        if core is None:
            core_kind = _CORE_NONE
        elif core is tokens or core is single:
            core_kind = _CORE_SHARED
        else:
            core_lens_v[cli] = len(core)
            cli += 1
            if type(core) is tuple:
                core_kind = _CORE_TUPLE
                for tok in core:
                    i = index.get(tok)
                    core_toks_v[co] = i if i is not None else _number(tok, index, table, new)
                    co += 1
            else:
                core_kind = _CORE_DICT
                for tok, v in core.items():
                    i = index.get(tok)
                    core_toks_v[co] = i if i is not None else _number(tok, index, table, new)
                    core_weights_v[cwo] = v
                    co += 1
                    cwo += 1
        cw = st.core_weights
        if cw is not None:
            kind |= _CW
            cw_epochs_v[cwi] = cw[0]
            cw_totals_v[cwi] = cw[2]
            m = len(cw[1])
            cw_lens_v[cwi] = m
            cwi += 1
            cw_weights[cwwo : cwwo + m] = cw[1]
            cwwo += m
        kinds[k] = kind | (core_kind << 4)
        keys.append(st.title_key)
        if st.years is not None or st.decimals is not None:
            marks[k] = (st.years, st.decimals)
        urls.extend(st.urls)
        url_counts_v[k] = len(st.urls)
    return (
        new,
        ids,
        times,
        counts,
        bytes(kinds),
        toks,
        lens,
        weights,
        core_toks,
        core_lens,
        core_weights,
        cw_epochs,
        cw_lens,
        cw_totals,
        cw_weights,
        keys,
        marks,
        urls,
        url_counts,
    )


def _unpack_stories(chunk: tuple, table: list, stories: dict) -> None:
    """Add the chunk's stories to ``stories`` (by id), ``table`` extended with its tokens."""
    (
        new,
        ids,
        times,
        counts,
        kinds,
        toks,
        lens,
        weights,
        core_toks,
        core_lens,
        core_weights,
        cw_epochs,
        cw_lens,
        cw_totals,
        cw_weights,
        keys,
        marks,
        urls,
        url_counts,
    ) = chunk
    table.extend(map(sys.intern, new))
    if len(_FLOATS) > 65_536:
        _FLOATS.clear()
    canon = _FLOATS.setdefault
    # where the next story's data starts: in toks, lens, weights, core_toks, core_lens,
    # core_weights, the core weights' arrays (by story, and their weights), urls
    o = li = w = co = cli = cw = cwi = cwo = uo = 0
    for k in range(len(ids)):
        st = StoryState.__new__(StoryState)
        st.id = ids[k]
        st.first = times[2 * k]
        st.last = times[2 * k + 1]
        st.n = counts[3 * k]
        st.n_title = counts[3 * k + 1]
        st.core_n = counts[3 * k + 2]
        kind = kinds[k]
        tokens = single = None
        if kind & _DICT:
            m = lens[li]
            li += 1
            tokens = {}
            for j in range(m):
                v = weights[w + j]
                tokens[table[toks[o + j]]] = canon(v, v)
            o += m
            w += m
        elif kind & _SINGLE:
            m = lens[li]
            li += 1
            single = tuple([table[toks[o + j]] for j in range(m)])
            o += m
        st.tokens = tokens
        st.single = single
        core_kind = kind >> 4
        if core_kind == _CORE_NONE:
            core = None
        elif core_kind == _CORE_SHARED:
            core = tokens if tokens is not None else single
        else:
            m = core_lens[cli]
            cli += 1
            if core_kind == _CORE_TUPLE:
                core = tuple([table[core_toks[co + j]] for j in range(m)])
            else:
                core = {}
                for j in range(m):
                    v = core_weights[cw + j]
                    core[table[core_toks[co + j]]] = canon(v, v)
                cw += m
            co += m
        st.core = core
        if kind & _CW:
            m = cw_lens[cwi]
            st.core_weights = (cw_epochs[cwi], cw_weights[cwo : cwo + m], cw_totals[cwi])
            cwi += 1
            cwo += m
        else:
            st.core_weights = None
        st.evicted = bool(kind & _EVICTED)
        st.title_key = keys[k]
        mark = marks.get(k)
        st.years, st.decimals = mark if mark is not None else (None, None)
        m = url_counts[k]
        st.urls = urls[uo : uo + m]
        uo += m
        st.acc = 0.0
        st.mark = 0
        stories[st.id] = st


def _pack_postings(part: list, index: dict, table: list) -> tuple:
    """Index entries (token, its stories) as a chunk: the tokens' numbers (and the tokens that
    had none), each one's count of stories, and the stories' ids one after another."""
    new: list = []
    toks = [_number(tok, index, table, new) for tok, _ in part]
    lens: list = []
    ids: list = []
    for _, posting in part:
        m = 0
        for st in posting:
            if not st.evicted:
                ids.append(st.id)
                m += 1
        lens.append(m)
    return new, array("I", toks), array("q", lens), array("q", ids)


def _unpack_postings(chunk: tuple, table: list, stories: dict, stats: dict) -> int:
    """Set the chunk's index entries on the tokens' records; returns how many."""
    new, toks, lens, ids = chunk
    table.extend(map(sys.intern, new))
    o = 0
    for k in range(len(toks)):
        m = lens[k]
        r = stats.get(table[toks[k]])
        if r is None:
            raise ValueError("the snapshot's index names a token it has no statistics of")
        r.posting = [stories[i] for i in ids[o : o + m]]
        o += m
    return len(toks)


class Clusterer:
    def __init__(self, settings: ClusterSettings | None = None, first_story_id: int = 1):
        self.s = settings or ClusterSettings()
        self.stories: dict[int, StoryState] = {}
        # The index, from each token to the active stories with it (and stale ones, flagged),
        # is in the tokens' records (``TokenStats.posting``). A token in more than
        # 4 x max_postings stories loses its list (it is never looked up, and such lists held
        # most of the index's memory); the list comes back when the token is rare again.
        self._index_cap = 4 * self.s.max_postings
        # (a plain dict, not a defaultdict: the compiled build reads and writes it directly)
        self.stats: dict[str, TokenStats] = {}  # each token's record
        self.url_story: dict[str, int] = {}
        self.merged_into: dict[int, int] = {}  # absorbed story -> surviving story
        self.blocked: set[frozenset[int]] = set()  # story pairs never to merge (user splits)
        self.next_id = first_story_id
        self._window = self.s.window_hours * 3600.0
        self._adds = 0
        self._horizon = -float("inf")  # latest entry time seen, for eviction
        self._idle: list[str] = []  # tokens whose record was kept for its memo only
        self._n_log = 2.0
        self._docs_log = 2.0
        self.docs = 0  # entries seen
        self._epoch = 0
        self._next_epoch = IDF_EPOCH
        self._stamp = 0  # scoring passes so far: the current one's marks its stories' acc
        self._lift = self.s.near_duplicate_ratio / 100.0
        # A one-member story holds each of its tokens at that member's field weight (1 or
        # summary_weight): when kappa times the lower one reaches 1, every token of such a
        # story counts fully, and scoring need not look it up (most candidates are such)
        self._single_full = self.s.kappa * min(1.0, self.s.summary_weight) >= 1.0
        # the vocabulary of the batch being placed, and its records (see _unpack)
        self._vocabulary: list | None = None
        self._vocab_tokens: list[str] | None = None
        self._vocab_records: list[TokenStats | None] | None = None
        self._vocab_numbers = None  # (its numbers: a view of them in the compiled build)
        # room for _heaviest_first's sort: SORT_SPACE each (C arrays in the compiled build)
        self._sort_w = [0.0] * 64
        self._sort_at = [0] * 64

    # -- the API ----------------------------------------------------------------------------------

    def add(self, item: Item, story_id: int | None = None) -> Assignment:
        """Cluster one entry. ``story_id`` forces its story (manual corrections, reloading)."""
        t = item.published.timestamp()
        self._tick(t)  # (first: it may drop records, and the entry's are looked up next)
        packed = item.features
        if packed is None:
            f = features(item.title, item.summary, self.s.summary_tokens, self.s.summary_weight)
            recs = self._records(f)
        else:
            f, recs = self._unpack(packed)
        if story_id is not None:
            self._join(self._story(self.resolve(story_id), t), item, f, recs, t)
            return Assignment(item.entry_id, story_id, 1.0, "manual")
        if item.url and item.url in self.url_story:
            sid = self.resolve(self.url_story[item.url])
            if sid in self.stories:
                self._join(self.stories[sid], item, f, recs, t)
                return Assignment(item.entry_id, sid, 1.0, "same-url")
        best, score, why = self._best_story(f, recs, t)
        if best is not None and score >= self.s.threshold:
            self._join(best, item, f, recs, t)
            sid = self._after_growth(best, t)
            return Assignment(item.entry_id, sid, score, str(Why(*why)))
        st = self._story(None, t)
        self._join(st, item, f, recs, t)
        return Assignment(item.entry_id, st.id, 1.0, "new")

    def add_many(self, items: Iterable[Item], story_ids: Iterable[int] | None = None):
        """``add`` for each item, in order (``story_ids`` in parallel when given), with the
        cyclic garbage collector paused: the clusterer's state is many long-lived objects and
        the collector's passes over them cost more than a tenth of the time, while what one
        ``add`` throws away is acyclic and freed at once anyway."""
        with gc_paused():
            try:
                if story_ids is None:
                    return [self.add(item) for item in items]
                return [self.add(item, sid) for item, sid in zip(items, story_ids, strict=True)]
            finally:
                self._forget_batch()

    # -- a snapshot between processes ------------------------------------------------------------

    _SCALARS = (
        "next_id",
        "_adds",
        "_horizon",
        "_n_log",
        "_docs_log",
        "docs",
        "_epoch",
        "_next_epoch",
    )

    def dump(self, f, chunk: int = 4096) -> None:
        """Write the state to the binary file ``f`` (see ``load``): the counters and the token
        statistics, then the active stories in pickles of ``chunk``, then the index as story
        ids, in its order (the order breaks ties between candidates: a loaded clusterer goes on
        exactly as this one would), in pickles of ``4 * chunk`` tokens. Nothing is copied
        whole: the tokens go as one string and their counts as arrays (a pickle of the
        frequency dicts held a memo entry per token: +25 MB at the end of a 250,000-entry
        round), and neither writing nor reading holds more than one chunk's temporary
        objects. A chunk is a few arrays (``_pack_stories``): a story's tokens are numbers,
        their places in the statistics' list of tokens. The URL map is not written: ``load``
        derives it from the stories."""
        with gc_paused():  # (the collector would walk the whole state, many times)
            self._dump(f, chunk)

    def _dump(self, f, chunk: int) -> None:
        dump = functools.partial(pickle.dump, file=f, protocol=pickle.HIGHEST_PROTOCOL)
        stats, epoch = self.stats, self._epoch
        nan = float("nan")
        table = list(stats)
        head = {name: getattr(self, name) for name in self._SCALARS}
        head.update(
            tokens="\n".join(table),  # tokens are words: no newline in them
            df=array("q", [r.df for r in stats.values()]),
            sf=array("q", [r.sf for r in stats.values()]),
            idf=array("d", [r.idf if r.epoch == epoch else nan for r in stats.values()]),
            idle=self._idle,
            blocked=self.blocked,
            merged_into=self.merged_into,
            stories=len(self.stories),
            postings=sum(r.posting is not None for r in stats.values()),
        )
        dump(head)
        del head
        index = {tok: i for i, tok in enumerate(table)}
        stories = iter(self.stories.values())
        while part := list(itertools.islice(stories, chunk)):
            dump(_pack_stories(part, index, table))
        postings = ((tok, r.posting) for tok, r in stats.items() if r.posting is not None)
        while part := list(itertools.islice(postings, 4 * chunk)):
            dump(_pack_postings(part, index, table))

    @classmethod
    def load(cls, f, settings: ClusterSettings) -> Clusterer:
        """A clusterer from what ``dump`` wrote. Raises on a truncated or foreign file
        (pickle errors, EOFError, ValueError)."""
        with gc_paused():  # (a load makes millions of objects, none of them garbage)
            return cls._load(f, settings)

    @classmethod
    def _load(cls, f, settings: ClusterSettings) -> Clusterer:
        head = pickle.load(f)
        c = cls(settings)
        for name in cls._SCALARS:
            setattr(c, name, head[name])
        table = list(map(sys.intern, head["tokens"].split("\n"))) if head["tokens"] else []
        if not len(table) == len(head["df"]) == len(head["sf"]) == len(head["idf"]):
            raise ValueError("the snapshot's token statistics do not add up")
        epoch = c._epoch
        c.stats = {
            tok: TokenStats(df, sf, v, epoch, tok) if v == v else TokenStats(df, sf, tok=tok)
            for tok, df, sf, v in zip(table, head["df"], head["sf"], head["idf"], strict=True)
        }
        c._idle = head["idle"]
        c.blocked, c.merged_into = head["blocked"], head["merged_into"]
        stories = c.stories
        while len(stories) < head["stories"]:
            _unpack_stories(pickle.load(f), table, stories)
        indexed = 0
        while indexed < head["postings"]:
            indexed += _unpack_postings(pickle.load(f), table, stories, c.stats)
        if len(stories) != head["stories"] or indexed != head["postings"]:
            raise ValueError("the snapshot's stories or index do not add up")
        url_story = c.url_story
        for st in stories.values():
            for url in st.urls:
                url_story.setdefault(url, st.id)
        return c

    def resolve(self, story_id: int) -> int:
        """The story a (possibly merged-away) story id now lives in."""
        seen = story_id
        while seen in self.merged_into:
            seen = self.merged_into[seen]
        return seen

    def block(self, a: int, b: int) -> None:
        """Never merge stories ``a`` and ``b`` (the user split them apart)."""
        self.blocked.add(frozenset((a, b)))

    def pair_score(self, a: Item, b: Item) -> tuple[float, Why]:
        """How ``b`` scores against a story made of ``a`` alone, with the current statistics.
        Nothing is stored; ``explain`` uses it."""
        fa = features(a.title, a.summary, self.s.summary_tokens, self.s.summary_weight)
        fb = features(b.title, b.summary, self.s.summary_tokens, self.s.summary_weight)
        ta = a.published.timestamp()
        st = StoryState(
            id=0,
            first=ta,
            last=ta,
            n=1,
            tokens=dict(fa.weights),
            years=dict.fromkeys(fa.years, 1),
            decimals=dict.fromkeys(fa.decimals, 1),
            title_key=fa.title_key,
        )
        weights, total = self._weights(fb, self._records(fb))
        if not total:
            return 0.0, Why(0.0, 0.0)
        kappa = self.s.kappa
        hit = sum(
            w * min(1.0, kappa * st.tokens[tok]) for tok, w in weights.items() if tok in st.tokens
        )
        score, signals = self._verify(st, fb, weights, hit / total, b.published.timestamp())
        return score, Why(*signals)

    # -- internals --------------------------------------------------------------------------------

    def idf(self, token: str) -> float:
        """How informative a token is: the lower of its inverse story frequency (over the
        active stories) and its inverse entry frequency (over the entries seen). The first
        makes a name concentrated in a few stories weigh much even when those stories are big;
        the second keeps a word found in a large share of all entries cheap even when the
        stories happen to be few, which stops one story from swallowing the stream. Memoized
        for an epoch of ``IDF_EPOCH`` adds, or 1/``EPOCH_SHARE`` of the active stories when
        that is more: one entry moves these statistics very little, and a big window's
        statistics move less per entry than a small one's."""
        r = self.stats.get(token)
        return self._idf(r if r is not None else self._looked_up(token))

    def _looked_up(self, token: str) -> TokenStats:
        """A new record for a token whose idf is wanted before any entry with it joins a story
        (``_forget_idle`` drops it at the epoch's end unless one does)."""
        r = self.stats[token] = TokenStats(tok=token)
        self._idle.append(token)
        return r

    def _unpack(self, packed: tuple) -> tuple[Features, list[TokenStats]]:
        """The Features ``text.pack_many`` took apart, its summary tokens weighing the
        settings' ``summary_weight`` (the object: the profiles share it), with the record of
        each of its tokens in the order of its weights (made for a token that has none yet, as
        ``_looked_up`` does). Its tokens are the records' strings, the ones every story with
        them shares: a token is kept once, and comparing two is comparing pointers. The
        records of its batch's vocabulary are kept while its entries are placed (until
        ``add_many`` returns), each looked up when an entry first has it, and again when the
        record was dropped since (``TokenStats.gone``)."""
        vocabulary, start, mid, end, years, decimals, title_key = packed
        if vocabulary is not self._vocabulary:
            self._vocabulary = vocabulary
            self._vocab_tokens = vocabulary[0].split(" ")
            self._vocab_records = [None] * len(self._vocab_tokens)
            self._vocab_numbers = vocabulary[1]
        tokens, records, numbers = self._vocab_tokens, self._vocab_records, self._vocab_numbers
        weights = {}
        recs = []
        summary_weight = self.s.summary_weight  # (the object: the profiles share it)
        for i in range(start, end):
            k = numbers[i]
            r = records[k]
            if r is None or r.gone:
                r = records[k] = self._record(tokens[k])
            weights[r.tok] = _ONE if i < mid else summary_weight  # (shared objects)
            recs.append(r)
        return Features(weights, years or _NONE, decimals or _NONE, title_key), recs

    def _forget_batch(self) -> None:
        """Let go of the vocabulary ``_unpack`` kept (its batch is placed)."""
        self._vocabulary = self._vocab_tokens = self._vocab_records = None
        self._vocab_numbers = None

    def _records(self, f: Features) -> list[TokenStats]:
        """The record of each token of ``f``, in the order of its weights (see ``_unpack``),
        which are rekeyed by the records' strings."""
        recs = []
        weights = {}
        for tok, w in f.weights.items():
            r = self._record(tok)
            weights[r.tok] = w
            recs.append(r)
        f.weights = weights
        return recs

    def _record(self, tok: str) -> TokenStats:
        """``tok``'s record, made when it has none (as ``_looked_up`` does)."""
        r = self.stats.get(tok)
        return r if r is not None else self._looked_up(tok)

    @property
    def postings(self) -> dict[str, list[StoryState]]:
        """The index, token -> its list (a dict made from the records)."""
        return {tok: r.posting for tok, r in self.stats.items() if r.posting is not None}

    def _idf(self, r: TokenStats) -> float:
        """``idf`` of the token whose record is ``r``."""
        if r.epoch != self._epoch:
            isf = math.log(self._n_log / (r.sf + 1))
            ief = math.log(self._docs_log / (r.df + 1))
            r.idf, r.epoch = min(isf, ief), self._epoch
        return r.idf

    def _weights(self, f: Features, recs: list[TokenStats]) -> tuple[dict[str, float], float]:
        """Each token's weight in the entry (its field weight times its idf), also left in its
        record's ``w``, and their sum (tokens no entry had before at ``unseen_weight``)."""
        weights = {}
        total = 0.0
        unseen = self.s.unseen_weight
        epoch = self._epoch
        i = 0
        for tok, fw in f.weights.items():
            r = recs[i]
            i += 1  # noqa: SIM113 (a C index in the compiled build; enumerate makes objects)
            iw = r.idf if r.epoch == epoch else self._idf(r)
            w = fw * iw
            weights[tok] = w
            r.w = w
            total += w if r.df else w * unseen
        return weights, total

    def _heaviest_first(self, recs: list) -> list:
        """The records by their weight (``w``), heaviest first, ties in their order: what
        ``sorted(recs, key=_by_weight, reverse=True)`` gives. The compiled build sorts the
        weights and places of up to ``SORT_SPACE`` records by insertion, in C arrays (an entry
        has ~40 tokens): that sort, with the attribute's getter as its key (a float object
        made of each weight), was 7% of placing an entry (perf, the bench's 50,500 entries;
        19,700 instructions each). The pure module keeps it: the faster of the two in Python."""
        n = len(recs)
        if not COMPILED or n > SORT_SPACE:
            return sorted(recs, key=_by_weight, reverse=True)
        weights, places = self._sort_w, self._sort_at
        for i in range(n):
            r = recs[i]
            w = r.w
            j = i
            while j > 0 and weights[j - 1] < w:  # (an equal weight keeps its place before)
                weights[j] = weights[j - 1]
                places[j] = places[j - 1]
                j -= 1
            weights[j] = w
            places[j] = i
        return [recs[places[i]] for i in range(n)]

    def _story(self, story_id: int | None, t: float) -> StoryState:
        if story_id is None:
            story_id = self.next_id
        st = self.stories.get(story_id)
        if st is None:
            st = StoryState(id=story_id, first=t, last=t)
            self.stories[story_id] = st
            self.next_id = max(self.next_id, story_id + 1)
        return st

    def _token_dict(self, st: StoryState) -> dict[str, float]:
        """A one-member story's tokens as ``tokens`` has them: token -> weight."""
        n_title, one, sw = st.n_title, _ONE, self.s.summary_weight
        return {tok: one if i < n_title else sw for i, tok in enumerate(st.single)}

    def _single_weight(self, st: StoryState, tok: str) -> float:
        """A one-member story's weight for ``tok`` (0 without it)."""
        single = st.single
        for i in range(len(single)):
            if single[i] == tok:
                return 1.0 if i < st.n_title else self.s.summary_weight
        return 0.0

    def _join(
        self, st: StoryState, item: Item, f: Features, recs: list[TokenStats], t: float
    ) -> None:
        self.docs += 1
        cap = self._index_cap
        weights = f.weights
        fresh = st.n == 0  # (a new story, most often: its tokens are the entry's, as a tuple)
        tokens = st.tokens
        if fresh:
            st.single = tuple(weights)
            n_title = 0
            for w in weights.values():
                if w != 1.0:
                    break
                n_title += 1
            st.n_title = n_title
            st.tokens = None
        elif tokens is None:  # its second member: the tokens become a dict (the cached core,
            # if it is the tuple, stays as it is until refreshed)
            tokens = st.tokens = self._token_dict(st)
            st.single = None
        elif st.core is tokens:  # the cached core shares this dict: keep it as it is
            st.core = dict(tokens)
        i = 0
        for tok, w in weights.items():
            r = recs[i]
            i += 1
            r.df += 1
            if not fresh:
                if tok in tokens:
                    tokens[tok] += w
                    continue
                tokens[tok] = w
            r.sf += 1
            live = r.sf
            posting = r.posting
            if posting is not None:
                if live > cap:  # too common to look up: stop indexing it
                    r.posting = None
                    r.stale = 0
                else:
                    posting.append(st)
            elif live == 1:
                r.posting = [st]
        if f.years:
            st.years = _count(st.years, dict.fromkeys(f.years, 1))
        if f.decimals:
            st.decimals = _count(st.decimals, dict.fromkeys(f.decimals, 1))
        st.n += 1
        st.first = min(st.first, t)
        st.last = max(st.last, t)
        if not st.title_key:
            st.title_key = f.title_key
        if item.url:
            st.urls.append(item.url)
            self.url_story.setdefault(item.url, st.id)

    def _active(self, st: StoryState, t: float) -> bool:
        return st.last >= t - self._window and st.first <= t + self._window

    def _best_story(
        self, f: Features, recs: list[TokenStats], t: float
    ) -> tuple[StoryState | None, float, tuple]:
        """The best candidate story for an entry (whose tokens' records are ``recs``), its
        score and the signals behind it (``Why``'s fields: made into one only for a story the
        entry joins, most have none)."""
        weights, total = self._weights(f, recs)
        if total <= 0:
            return None, 0.0, ()
        max_post, max_lookups = self.s.max_postings, self.s.lookup_tokens
        kappa = self.s.kappa
        self._stamp += 1
        stamp = self._stamp
        touched: list[StoryState] = []  # the stories with weight in this pass, in order
        skipped = 0.0  # weight of tokens not looked up: counted in the bound below
        # (their records: each holds its token and its weight in this pass, ``w``; a tuple of
        # the two per token made ~30 tuples and floats per entry, at lookup_tokens = 8)
        not_looked_up: list[TokenStats] = []
        looked: set[str] = set()  # the tokens whose postings were read
        lookups = 0
        single_full = self._single_full
        # (heaviest first; a stable sort: ties in the entry's order, as its weights have them)
        for r in self._heaviest_first(recs):
            live = r.sf
            if not live:
                continue  # in no active story: adds nothing to any candidate
            tok, w = r.tok, r.w
            if live > max_post or lookups >= max_lookups:
                skipped += w
                not_looked_up.append(r)
                continue
            posting = r.posting
            if posting is None:  # too common a moment ago: not indexed yet again
                skipped += w
                not_looked_up.append(r)
                continue
            lookups += 1
            looked.add(tok)
            for st in posting:
                if st.evicted:
                    continue
                if st.mark != stamp:
                    st.mark, st.acc = stamp, 0.0
                    touched.append(st)
                if st.n == 1 and single_full:
                    st.acc += w
                    continue
                tokens = st.tokens  # (locals the compiled build keeps as C doubles:)
                c = tokens[tok] if tokens is not None else self._single_weight(st, tok)
                share = kappa * c / st.n
                st.acc += w if share >= 1.0 else w * share
        if not touched:
            return None, 0.0, ()
        best, best_score, best_why = None, 0.0, ()
        # score <= sqrt(coverage) (core <= 1, penalties only lower it), and coverage is at most
        # (accumulated + skipped) / total: visit candidates by accumulated weight and stop once
        # none can reach the threshold or beat the best so far.
        floor = self.s.threshold**2
        for st in _top(touched, self.s.candidates):
            a = st.acc
            bound = (a + skipped) / total
            if bound < floor and bound < NEAR_DUPLICATE_MIN_COVERAGE:
                break
            if best is not None and math.sqrt(bound) <= best_score:
                break
            if not self._active(st, t):
                continue
            if skipped:  # add what the tokens not looked up contribute
                tokens, n = st.tokens, st.n
                if tokens is None:  # one member: its tokens the entry has, but for those
                    # looked up (an active story's token the entry has was either looked up or
                    # skipped), in the story's order
                    single, n_title = st.single, st.n_title
                    for i in range(len(single)):
                        tok = single[i]
                        fw = weights.get(tok)
                        if fw is None or tok in looked:
                            continue
                        w = fw
                        share = kappa * (1.0 if i < n_title else self.s.summary_weight)
                        a += w if share >= 1.0 else w * share
                else:
                    for r in not_looked_up:
                        tok = r.tok
                        if tok in tokens:
                            w = r.w
                            share = kappa * tokens[tok] / n
                            a += w if share >= 1.0 else w * share
                exact = a / total
                # the same bound, now exact; a near-duplicate title can still lift a candidate
                # with enough coverage up to its title ratio (>= near_duplicate_ratio / 100)
                can_lift = exact >= NEAR_DUPLICATE_MIN_COVERAGE and best_score < self._lift
                if math.sqrt(exact) < max(self.s.threshold, best_score) and not can_lift:
                    continue
            score, why = self._verify(st, f, weights, a / total, t)
            if score > best_score:
                best, best_score, best_why = st, score, why
        return best, best_score, best_why

    def _core(self, st: StoryState) -> dict[str, float] | tuple[str, ...]:
        """Tokens in at least ``core_share`` of the story's members, with their share (capped
        at 1). Cached; refreshed when the story has grown by a quarter. A one-member story's
        core is a tuple of tokens, its own (shared, not copied: most stories have one member)
        or its title's alone: their shares are their weights (the first ``n_title`` 1, the rest
        summary_weight; see ``_core_weights``), and the tuple stays the core after the story
        grows, until refreshed."""
        core = st.core
        if core is None or st.n >= st.core_n * 1.25 + 1:
            n = st.n
            cut = self.s.core_share * n
            single = st.single
            if single is not None:
                if self.s.summary_weight >= cut or st.n_title == len(single):
                    core = single
                else:
                    core = single[: st.n_title]
            else:
                core = {tok: min(1.0, c / n) for tok, c in st.tokens.items() if c >= cut}
            st.core, st.core_n, st.core_weights = core, n, None
        return core

    def _core_weights(self, st: StoryState) -> tuple[tuple[dict[str, float], array], float]:
        """The core's tokens (its dict) and their weights, idf * share, side by side, with
        their sum; the weights refreshed with the core (as the story grows) or after 8 idf
        epochs, whichever comes first. Only the weights are kept, as an array of doubles in
        the core's order (8 bytes a token, where a dict of float objects took 40): the core
        dict is the same while they are (``_core`` drops them when it makes a new one, and
        ``_join``'s copy of a core it shared keeps its order), so a tuple of its tokens beside
        them was a copy: the clustering stage alone over the bench's 5000 feeds peaked at
        453-455 MB without it, 469-475 MB with it."""
        cw = st.core_weights
        if cw is None or cw[0] <= self._epoch - 8 or st.n >= st.core_n * 1.25 + 1:
            core = self._core(st)
            stats, epoch = self.stats, self._epoch
            n = len(core)
            # zeros, then each set in place (the compiled build writes the doubles through a
            # view: an array made from a list of floats parsed each of them as an argument)
            weighted = array("d", bytes(8 * n))
            view = weighted
            total = 0.0
            if type(core) is tuple:
                n_title, sw = st.n_title, self.s.summary_weight
                for i in range(n):
                    r = stats.get(core[i])
                    iw = r.idf if r is not None and r.epoch == epoch else self.idf(core[i])
                    w = iw * (1.0 if i < n_title else sw)
                    view[i] = w
                    total += w
            else:
                i = 0
                for tok, share in core.items():
                    r = stats.get(tok)
                    iw = r.idf if r is not None and r.epoch == epoch else self.idf(tok)
                    w = iw * share
                    view[i] = w
                    total += w
                    i += 1  # noqa: SIM113
            cw = st.core_weights = (self._epoch, weighted, total)
        return (st.core, cw[1]), cw[2]

    def _verify(
        self, st: StoryState, f: Features, weights: dict[str, float], coverage: float, t: float
    ):
        s = self.s
        (core_tokens, core_weights), core_w = self._core_weights(st)
        core_hit = 0.0
        cw = core_weights  # (the compiled build reads the array's doubles in place)
        for i, tok in enumerate(core_tokens):
            if tok in weights:
                core_hit += cw[i]
        core = core_hit / core_w if core_w else 0.0
        score = math.sqrt(coverage * core)
        # one shared word between two short texts is weak evidence: a young story needs at
        # least two of its words in the entry
        if (
            st.n < s.small_story
            and score > 0.0
            and not (
                _shares_two(st.tokens, weights)
                if st.tokens is not None
                else _shares_two_of(st.single, weights)
            )
        ):
            score *= 0.5
        ratio = 0.0
        if score < s.threshold and coverage >= NEAR_DUPLICATE_MIN_COVERAGE and st.title_key:
            ratio = fuzz.ratio(f.title_key, st.title_key)
            if ratio >= s.near_duplicate_ratio:
                score = max(score, ratio / 100.0)
            else:
                ratio = 0.0
        years = bool(f.years and st.years and not (f.years & st.years.keys()))
        if years:
            score *= s.conflict_penalty
        figures = bool(f.decimals and st.decimals and not (f.decimals & st.decimals.keys()))
        if figures:
            score *= s.conflict_penalty
        gap_h = max(0.0, st.first - t, t - st.last) / 3600.0
        if gap_h > s.time_grace_hours:
            score *= 0.5 ** ((gap_h - s.time_grace_hours) / s.time_half_life_hours)
        return score, (coverage, core, ratio, years, figures, gap_h)

    # -- story merging --------------------------------------------------------------------------

    def _after_growth(self, st: StoryState, t: float) -> int:
        n = st.n
        if (n & (n - 1)) == 0:  # 2, 4, 8, 16 ...
            other, score = self._best_merge(st, t)
            if other is not None and score >= self.s.merge_threshold:
                keep, gone = (other, st) if other.n >= st.n else (st, other)
                self._merge(keep, gone)
                return keep.id
        return st.id

    def _best_merge(self, st: StoryState, t: float) -> tuple[StoryState | None, float]:
        q, total = self._core_weights(st)
        if not total:
            return None, 0.0
        self._stamp += 1
        stamp = self._stamp
        touched: list[StoryState] = []
        kappa = self.s.kappa
        max_post = self.s.max_postings
        stats = self.stats
        single_full = self._single_full
        for tok, w in zip(*q, strict=True):
            r = stats.get(tok)
            if r is None or r.sf > max_post:
                continue
            posting = r.posting
            if posting is None:
                continue
            for o in posting:
                if o is not st and not o.evicted:
                    if o.mark != stamp:
                        o.mark, o.acc = stamp, 0.0
                        touched.append(o)
                    if o.n == 1 and single_full:
                        o.acc += w
                        continue
                    otok = o.tokens
                    oc = otok[tok] if otok is not None else self._single_weight(o, tok)
                    share = kappa * oc / o.n
                    o.acc += w if share >= 1.0 else w * share
        best, best_score = None, 0.0
        blocked = self.blocked
        tokens, n = st.tokens, st.n  # (a dict: ``st`` has just grown, see _after_growth)
        for o in _top(touched, 5):
            a = o.acc
            if not self._active(o, t) or (blocked and frozenset((st.id, o.id)) in blocked):
                continue
            qo, to = self._core_weights(o)
            if not to:
                continue
            b = 0.0
            for tok, w in zip(*qo, strict=True):
                c = tokens.get(tok)
                if c is not None:
                    share = kappa * c / n
                    b += w if share >= 1.0 else w * share
            b /= to
            score = math.sqrt((a / total) * b)
            if st.years and o.years and not (st.years.keys() & o.years.keys()):
                score *= self.s.conflict_penalty
            if st.decimals and o.decimals and not (st.decimals.keys() & o.decimals.keys()):
                score *= self.s.conflict_penalty
            gap_h = max(0.0, st.first - o.last, o.first - st.last) / 3600.0
            if gap_h > self.s.time_grace_hours:
                score *= 0.5 ** ((gap_h - self.s.time_grace_hours) / self.s.time_half_life_hours)
            if score > best_score:
                best, best_score = o, score
        return best, best_score

    def _merge(self, keep: StoryState, gone: StoryState) -> None:
        # ``gone`` stays in its posting lists, flagged like an evicted story (finding it in
        # the long list of a common token costs more than the whole scoring of an entry)
        gone.evicted = True
        stats = self.stats
        # (``keep`` is the larger of a story that has just grown and another: it has a dict;
        # ``gone`` may have one member)
        gone_tokens = gone.tokens if gone.tokens is not None else self._token_dict(gone)
        for tok, c in gone_tokens.items():
            r = stats[tok]
            r.stale += 1
            if tok in keep.tokens:
                keep.tokens[tok] += c
                r.sf -= 1
            else:
                keep.tokens[tok] = c
                posting = r.posting
                if posting is not None:
                    posting.append(keep)
        if gone.years:
            keep.years = _count(keep.years, gone.years)
        if gone.decimals:
            keep.decimals = _count(keep.decimals, gone.decimals)
        keep.n += gone.n
        keep.first = min(keep.first, gone.first)
        keep.last = max(keep.last, gone.last)
        keep.urls.extend(gone.urls)
        keep.core = keep.core_weights = None
        for url in gone.urls:
            self.url_story[url] = keep.id
        for pair in [p for p in self.blocked if gone.id in p]:
            (other,) = pair - {gone.id}
            self.blocked.add(frozenset((keep.id, other)))
        del self.stories[gone.id]
        self.merged_into[gone.id] = keep.id

    def _forget_idle(self) -> None:
        """Drop the records that held only a memoized idf (see evict and _weights): the epoch
        that memoized it is over."""
        stats = self.stats
        for tok in self._idle:
            r = stats.get(tok)
            if r is not None and r.df == 0 and r.sf == 0:
                del stats[tok]
                r.gone = True
        self._idle = []

    @property
    def df(self) -> dict[str, int]:
        """Entries in the window with each token (a copy made from the records)."""
        return {tok: r.df for tok, r in self.stats.items() if r.df}

    @property
    def sf(self) -> dict[str, int]:
        """Active stories with each token (a copy made from the records)."""
        return {tok: r.sf for tok, r in self.stats.items() if r.sf}

    # -- memory: forget stories that left the window --------------------------------------------

    def _tick(self, t: float) -> None:
        self._adds += 1
        if self._adds >= self._next_epoch or self._adds < IDF_EPOCH:
            self._next_epoch = self._adds + max(IDF_EPOCH, len(self.stories) // EPOCH_SHARE)
            self._forget_idle()
            self._n_log = len(self.stories) + 2.0
            self._docs_log = self.docs + 2.0
            self._epoch += 1
        if t > self._horizon:
            self._horizon = t
        if self._adds % 2048 == 0:
            self.evict(self._horizon)

    def evict(self, now: float) -> int:
        """Drop stories idle for longer than the window before ``now`` (epoch seconds).
        A posting list keeps an evicted story (flagged, skipped by readers) until evicted ones
        outnumber live ones there: rebuilding the long lists of common tokens at every eviction
        cost more than the scoring itself once the window was full."""
        cutoff = now - self._window
        old = [st for st in self.stories.values() if st.last < cutoff]
        if not old:
            return 0
        gone = {st.id for st in old}
        touched: dict[str, TokenStats] = {}  # (in the order first touched)
        stats = self.stats
        for st in old:
            st.evicted = True
            for tok in st.tokens if st.tokens is not None else st.single:
                r = stats[tok]
                r.sf -= 1
                r.stale += 1
                touched[tok] = r
            for url in st.urls:
                if self.url_story.get(url) in gone:
                    del self.url_story[url]
            del self.stories[st.id]
        rebuild: dict[str, TokenStats] = {}
        epoch = self._epoch
        for tok, r in touched.items():
            if r.sf <= 0:
                r.posting = None
                r.stale = 0
                if r.epoch == epoch:  # keep its memoized idf until the epoch ends
                    r.df = r.sf = 0
                    self._idle.append(tok)
                else:
                    del stats[tok]
                    r.gone = True
            elif r.posting is None:
                if r.sf <= self.s.max_postings:
                    rebuild[tok] = r
            elif r.stale > r.sf:
                r.posting = [o for o in r.posting if not o.evicted]
                r.stale = 0
        if rebuild:  # tokens rare again: index them again, in one pass over the stories
            for r in rebuild.values():
                r.posting, r.stale = [], 0
            for st in self.stories.values():
                tokens = st.tokens
                if tokens is None:  # (a tuple: look its tokens up, not through it)
                    for tok in st.single:
                        r = rebuild.get(tok)
                        if r is not None:
                            r.posting.append(st)
                    continue
                for tok, r in rebuild.items():
                    if tok in tokens:
                        r.posting.append(st)
        return len(old)


# -- the compiled build --------------------------------------------------------------------------
#
# setup.py compiles a copy of this file, typed by cluster.pxd, as ``_ccluster``: about 1.4x the
# entries per second, the same stories. Its Clusterer and StoryState replace the ones above (the
# rest stays: settings, items and assignments are plain data) when it was built from this file
# and cluster.pxd as they are now (an edited source is never shadowed by an old build) and
# AGGREGATOR_PURE_PYTHON is not 1. IMPLEMENTATION says which one runs, WHY_PURE why not compiled.


def source_digest(names: tuple[str, ...] = ("cluster.py", "cluster.pxd")) -> str | None:
    """blake2b of these files of this folder, in order (by default what the compiled build is
    made from)."""
    return _base.source_digest(names)


IMPLEMENTATION, WHY_PURE = "pure Python", ""
if __name__ == "aggregator.dedup.cluster":  # not in the compiled copy itself
    _build, WHY_PURE = _base.compiled_build("_ccluster", ("cluster.py", "cluster.pxd"))
    if _build is not None:
        # (through globals(): in the compiled copy these names are its cdef classes, which
        # Cython refuses to see assigned, even in a branch that never runs there)
        globals().update(
            Clusterer=_build.Clusterer, StoryState=_build.StoryState, TokenStats=_build.TokenStats
        )
        IMPLEMENTATION = "compiled"
    del _build
