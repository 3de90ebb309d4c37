"""Pure text features for clustering: informative tokens and the numbers an entry names.

Language-agnostic on purpose: tokens are lowercased words (Unicode letters and digits), a short
multilingual list of function words is dropped, and how informative a token is comes from the
stream itself (its document frequency), not from a fixed dictionary.
"""

from __future__ import annotations

import re
import unicodedata
from array import array
from collections.abc import Iterable
from dataclasses import dataclass

_WORD = re.compile(r"[^\W_]+(?:[.,'’][^\W_]+)*", re.UNICODE)
# the same words in ASCII text, found ~15% faster (no Unicode category lookups)
_WORD_ASCII = re.compile(r"[^\W_]+(?:[.,'][^\W_]+)*", re.ASCII)
_YEAR = re.compile(r"^(?:1[89]|20)\d\d$")
_DECIMAL = re.compile(r"^\d+[.,]\d+$")

# Function words of the languages feeds most often use. The stream's own document frequency
# does the rest; this list only keeps them from looking rare while the stream is young.
STOPWORDS = frozenset(
    """
    a about above after again against all also am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers him his how i if in into is it its itself just
    me more most my no nor not now of off on once only or other our out over own same she should
    so some such than that the their them then there these they this those through to too under
    until up very was we were what when where which while who whom why will with would you your
    says said say new after amid over up out vs via just get gets may might must can't won't de
    la le les des du un une et en est pour par sur au aux dans que qui pas plus ne se ce il der
    die das den dem des ein eine einer und ist im in zu mit von auf für nicht sich bei als auch
    es an dass wie nach aus hat wird sind el los las del y que en un una por con para es al lo
    su se il di che è per una sono della nel gli da dei delle o e
    """.split()  # noqa: SIM905 (a word list reads better as text)
)


@dataclass(slots=True)  # not frozen: one is made per entry, and frozen ones init slower
class Features:
    """What clustering needs from one entry. ``weights`` maps each informative token to its
    field weight (1.0 title, lower for summary tokens)."""

    weights: dict[str, float]
    years: frozenset[str]
    decimals: frozenset[str]
    title_key: str  # normalized title for fuzzy comparison


# whether this is the compiled copy, which setup.py builds as ``_ctext`` (see the end of this
# file; by its name, not by ``cython.compiled``: importing Cython's shadow module took 6.6 ms)
COMPILED = __name__.rpartition(".")[2] == "_ctext"


def _alnum(c: str) -> bool:
    r"""Whether the character is a letter or a digit: ``[^\W_]`` of the word patterns (which is
    ``str.isalnum`` at every code point; tests/test_compiled.py checks them all), with ASCII
    decided by comparisons."""
    if c < "\x80":
        return ("a" <= c <= "z") or ("0" <= c <= "9") or ("A" <= c <= "Z")
    return c.isalnum()


def _scan(text: str) -> list[str]:
    """``_WORD.findall(text)`` (``_WORD_ASCII``'s for ASCII text) by one pass over the
    characters: a run of letters and digits, with more runs joined to it by one '.', ',' or
    apostrophe each. The compiled copy's tokenizer (with the rest of this module compiled,
    the features of a bench entry take 129,000 instructions against the pure module's
    342,000; 16-18 us against 37-40 here). The pure module keeps the regex, which is the
    faster of the two in Python."""
    out = []
    state = 0  # 0: between words; 1: in a word; 2: after a separator in a word (at ``sep``)
    start = sep = 0
    for i, c in enumerate(text):  # (one pass, no lookahead: compiled, a loop over the buffer)
        if _alnum(c):
            if state == 0:
                start = i
            state = 1
        elif state == 1:
            if c == "." or c == "," or c == "'" or c == "’":
                state, sep = 2, i
            else:
                out.append(text[start:i])
                state = 0
        elif state == 2:  # a separator not followed by a letter or digit ends the word before it
            out.append(text[start:sep])
            state = 0
    if state == 1:
        out.append(text[start:])
    elif state == 2:
        out.append(text[start:sep])
    return out


def words(text: str) -> list[str]:
    if text.isascii():
        low, pattern = text.lower(), _WORD_ASCII
    else:
        low = unicodedata.normalize("NFKC", text).replace("’", "'").lower()
        pattern = _WORD
    found = _scan(low) if COMPILED else pattern.findall(low)
    if "'" not in low:  # the common case, in one pass
        return [w for w in found if len(w) > 1 or w.isdigit()]
    out = []
    for w in found:
        if "'" in w:
            if w.endswith("'s"):
                w = w[:-2]
            w = w.replace("'", "")
        if len(w) > 1 or w.isdigit():
            out.append(w)
    return out


def first_words(text: str, k: int) -> list[str]:
    """``words(text)[:k]`` without tokenizing all of a long text (a full-content summary runs to
    20,000 characters, of which clustering reads the first ``summary_tokens`` words). A cut text
    gives the same words as the whole but for the one the cut goes through, its last: so when
    the cut text holds more than k words, its first k are the whole text's first k."""
    if k <= 0:
        return []
    # characters: a word and its separators take ~6 in English news text, so this cut mostly
    # holds enough words at once (a cut of 16 * k tokenized twice what was needed: features
    # took 1.44 s for the bench's 50,500 entries, 1.26 s with this one)
    budget = 8 * k
    while len(text) > budget:
        ws = words(text[:budget])
        if len(ws) > k:
            return ws[:k]
        budget *= 4
    return words(text)[:k]


_STEMS: dict[str, str] = {}


def stem(w: str) -> str:
    """A deliberately light stemmer: plural endings only. Memoized (bounded)."""
    s = _STEMS.get(w)
    if s is None:
        s = _stem(w)
        if len(_STEMS) > 500_000:
            _STEMS.clear()
        _STEMS[w] = s
    return s


def _stem(w: str) -> str:
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


_TERMS: dict[str, str] = {}  # word -> its term: the stem, or "" for a stopword
# One string object per token (``term``'s): features computed in this process share them. (The
# clusterer keeps its own, one per token in its records, see ``Clusterer._unpack``: it keeps a
# token in every story that has it, and a copy per entry took 100 MB more for the bench's 50,500
# entries; a dictionary compares two equal strings by content, the same one by address.)
_SAME: dict[str, str] = {}


def term(w: str) -> str:
    """The token a word counts as: its stem, or "" for a function word. Memoized (bounded)."""
    s = _TERMS.get(w)
    if s is None:
        s = "" if w in STOPWORDS else stem(w)
        if len(_TERMS) > 500_000:
            _TERMS.clear()
        if len(_SAME) > 500_000:
            _SAME.clear()
        s = _TERMS[w] = _SAME.setdefault(s, s)
    return s


_DIGIT = re.compile(r"\d")


def features(
    title: str, summary: str = "", summary_tokens: int = 60, summary_weight: float = 0.5
) -> Features:
    weights: dict[str, float] = {}
    years: set[str] = set()
    decimals: set[str] = set()
    title_words = words(title)
    terms = _TERMS
    # numbers only where the text has a digit (folding can make one from a non-ASCII sign)
    numbers = not title.isascii() or _DIGIT.search(title) is not None
    for w in title_words:
        if numbers and w[0].isdigit():
            if _YEAR.match(w):
                years.add(w)
            elif _DECIMAL.match(w):
                decimals.add(w.replace(",", "."))
        s = terms.get(w)
        if s is None:
            s = term(w)
        if s:
            weights[s] = 1.0
    if summary:
        for w in first_words(summary, summary_tokens):  # (no scan of all of a long summary)
            if w[0].isdigit() and _YEAR.match(w):
                years.add(w)
            s = terms.get(w)
            if s is None:
                s = term(w)
            if s and s not in weights:
                weights[s] = summary_weight
    return Features(
        weights=weights,
        years=frozenset(years),
        decimals=frozenset(decimals),
        title_key=" ".join(title_words),
    )


def pack_many(fs: Iterable[Features]) -> list[tuple]:
    """Each of ``fs`` as plain data for another process to unpack (``cluster.Clusterer.
    _unpack``): cheaper to send and to read back than the objects themselves (a pickled
    Features took 10-13 us to load here, against 21-30 us to compute it). Their tokens are
    numbers, places in a vocabulary they share: the batch's distinct tokens as one string, and
    every entry's numbers one after another in one array, sent once with the batch (a pickle
    keeps one copy of what several of its objects hold). Each is (that vocabulary, a list of
    the string and the array; where its numbers start, where its summary's start, where they
    end; its years, its decimals, its title key); its title's tokens (weight 1.0, first in
    ``weights``) before its summary's (a summary weight of 1.0 is told apart by nothing: none
    need be). The clusterer so looks each distinct token of a batch up once, where it looked
    up each token of each entry by its text (a batch of 10,000 of the bench's entries: 382,600
    tokens, 16,500 distinct)."""
    distinct: dict[str, int] = {}
    # (each entry's numbers go into the array as it is packed: a list of all of a batch's, as
    # int objects, peaked 3.4 MB higher for 10,000 of the bench's entries, tracemalloc; ``fs``
    # may be a generator, so that each Features is dropped once packed: see _packed_rows)
    numbers = array("I")
    vocabulary = [None, numbers]  # (its string made once all are packed)
    out = []
    start = 0
    for f in fs:
        title = True
        mid = start
        weights = f.weights
        mine = []
        for tok, w in weights.items():
            k = distinct.get(tok)
            if k is None:
                k = distinct[tok] = len(distinct)
            mine.append(k)
            if title:
                if w == 1.0:
                    mid += 1
                else:
                    title = False
        numbers.extend(mine)
        end = start + len(mine)
        out.append((vocabulary, start, mid, end, f.years or None, f.decimals or None, f.title_key))
        start = end
    vocabulary[0] = " ".join(distinct)  # (a token holds no space)
    return out


def pack(f: Features) -> tuple:
    """One Features packed as ``pack_many`` packs a batch's."""
    return pack_many((f,))[0]


# -- the compiled build --------------------------------------------------------------------------
#
# setup.py compiles a copy of this file, typed by text.pxd, as ``_ctext`` (as it does cluster.py:
# see there). Its functions replace the ones above when it was built from this file and text.pxd
# as they are now and AGGREGATOR_PURE_PYTHON is not 1: the same features, from a tokenizer that
# scans characters in C (``_scan``). IMPLEMENTATION says which one runs, WHY_PURE why not compiled.

IMPLEMENTATION, WHY_PURE = "pure Python", ""
if __name__ == "aggregator.dedup.text":  # not in the compiled copy itself
    from .base import compiled_build

    _build, WHY_PURE = compiled_build("_ctext", ("text.py", "text.pxd"))
    if _build is not None:
        for _name in (
            "Features",
            "words",
            "first_words",
            "stem",
            "term",
            "features",
            "pack_many",
            "pack",
        ):
            globals()[_name] = getattr(_build, _name)
        IMPLEMENTATION = "compiled"
        del _name
    del _build
