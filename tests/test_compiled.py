"""The compiled clusterer (setup.py builds it from cluster.py with the types of cluster.pxd, and
the features it reads from text.py with those of text.pxd) gives the very stories of the pure
modules, and is never used when it was built from another source.

CI sets AGGREGATOR_REQUIRE_COMPILED=1: there the build must be present and in use. Elsewhere
(no C compiler at install time) the tests that need it skip and say why.
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from aggregator.dedup import base, cluster, text
from aggregator.dedup.cluster import ClusterSettings

from .conftest import SHARED_DATA
from .test_cluster import _TEXTS, synthetic_stream

REQUIRED = os.environ.get("AGGREGATOR_REQUIRE_COMPILED") == "1"
PACKAGE = Path(cluster.__file__).resolve().parents[2] / "aggregator"


def need_compiled(module=cluster) -> None:
    if module.IMPLEMENTATION != "compiled":
        name = module.__name__.rsplit(".", 1)[-1]
        if REQUIRED:
            pytest.fail(f"the compiled {name} is required here but not used: {module.WHY_PURE}")
        pytest.skip(f"the compiled {name} is not in use: {module.WHY_PURE}")


def pure_module(source=cluster):
    """A module's file loaded again under another name: the copy keeps its own pure
    definitions."""
    name = f"aggregator.dedup._pure_{source.__name__.rsplit('.', 1)[-1]}_for_tests"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, source.__file__)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_compiled_build_is_in_use():
    need_compiled()
    assert type(cluster.Clusterer.add).__name__ != "function"  # a C method, not Python
    assert cluster.Clusterer.__module__ == "aggregator.dedup._ccluster"
    assert cluster.StoryState.__module__ == "aggregator.dedup._ccluster"
    assert cluster.source_digest() == sys.modules[cluster.Clusterer.__module__].SOURCE_DIGEST


def test_the_compiled_build_has_the_types_of_cluster_pxd():
    """The build must be typed by cluster.pxd, not only compiled: its classes are C types
    (cdef classes: fixed, with typed fields). Before setup.py put the copy in a package,
    Cython did not find the .pxd and built the untyped Python as is, silently."""
    need_compiled()
    st = cluster.StoryState(1, 0.0, 0.0)
    with pytest.raises(TypeError):
        st.n = "three"  # a C integer field (a Python class would take it)
    with pytest.raises(TypeError):
        cluster.Clusterer.extra = 1  # a C type cannot be given attributes
    assert not hasattr(st, "__dict__")


def test_pure_and_compiled_place_every_entry_alike_and_read_each_others_dumps():
    need_compiled()
    pure = pure_module()
    assert pure.IMPLEMENTATION == "pure Python"
    assert type(pure.Clusterer.add).__name__ == "function"
    # the settings of the snapshot test: evictions, index caps and merges all happen
    kw = {"window_hours": 12, "max_postings": 3, "merge_threshold": 0.1}
    items = synthetic_stream(4000)
    half = len(items) // 2
    fast, slow = (
        cluster.Clusterer(ClusterSettings(**kw)),
        pure.Clusterer(pure.ClusterSettings(**kw)),
    )
    first = fast.add_many(items[:half])
    assert [tuple(a) for a in first] == [tuple(a) for a in slow.add_many(items[:half])]
    assert fast.merged_into == slow.merged_into and fast.merged_into
    assert {a.reason.split(":")[0] for a in first} >= {"new", "same-url", "similar"}
    # a dump of either build goes on in the other exactly as in itself
    for writer, reader in ((fast, pure), (slow, cluster)):
        buf = io.BytesIO()
        writer.dump(buf)
        buf.seek(0)
        loaded = reader.Clusterer.load(buf, reader.ClusterSettings(**kw))
        assert type(loaded).__module__ == reader.Clusterer.__module__
        assert [tuple(a) for a in loaded.add_many(items[half:])] == [
            tuple(a) for a in writer.add_many(items[half:])
        ]


def test_the_compiled_features_are_in_use():
    need_compiled(text)
    for name in ("words", "first_words", "features"):
        assert type(getattr(text, name)).__name__ != "function"  # C functions, not Python
    assert text.Features.__module__ == text.features.__module__ == "aggregator.dedup._ctext"
    built = sys.modules["aggregator.dedup._ctext"]
    assert base.source_digest(("text.py", "text.pxd")) == built.SOURCE_DIGEST


def test_letters_and_digits_are_the_word_patterns_class_at_every_code_point():
    """The scan's test for a word character (``_alnum``: comparisons for ASCII, str.isalnum
    beyond) is the patterns' ``[^\\W_]`` at all 1,114,112 code points (the ASCII pattern's
    below 128)."""
    pure = pure_module(text)
    chars = "".join(map(chr, range(sys.maxunicode + 1)))
    by_pattern = [m.start() for m in re.finditer(r"[^\W_]", chars)]
    assert len(by_pattern) > 100_000  # letters of every script, and digits
    assert [i for i, c in enumerate(chars) if pure._alnum(c)] == by_pattern
    by_ascii = [m.start() for m in re.finditer(r"[^\W_]", chars[:128], re.ASCII)]
    assert [i for i in by_pattern if i < 128] == by_ascii


# texts the tokenizer must split as the regex does: words with separators (test_cluster's),
# and any characters at all, with the separators and letters made frequent
_ANY = st.text(
    st.one_of(
        st.sampled_from(list(".,'’_ -\u0301\u00a0aZ9é٣")),
        st.characters(),
    ),
    max_size=60,
)


@hypothesis_settings(max_examples=1500, deadline=None)
@given(st.one_of(_TEXTS, _ANY))
def test_the_scan_finds_the_words_the_pattern_finds(s):
    pure = pure_module(text)
    expected = text._WORD.findall(s)
    assert pure._scan(s) == expected
    if s.isascii():
        assert text._WORD_ASCII.findall(s) == expected
    if text.IMPLEMENTATION == "compiled":
        assert sys.modules["aggregator.dedup._ctext"]._scan(s) == expected


def _seen(f) -> tuple:
    """What clustering reads of a Features (the weights' order too: it breaks ties)."""
    return list(f.weights.items()), f.years, f.decimals, f.title_key


@hypothesis_settings(max_examples=500, deadline=None)
@given(st.one_of(_TEXTS, _ANY), st.one_of(_TEXTS, _ANY), st.integers(0, 30))
def test_pure_and_compiled_features_are_the_same(title, summary, k):
    need_compiled(text)
    pure = pure_module(text)
    assert not pure.COMPILED and pure.words is not text.words
    assert pure.words(title) == text.words(title)
    assert pure.first_words(summary, k) == text.first_words(summary, k)
    assert _seen(pure.features(title, summary, k)) == _seen(text.features(title, summary, k))


def test_pure_and_compiled_features_are_the_same_for_real_headlines():
    need_compiled(text)
    pure = pure_module(text)
    texts = [(i.title, i.summary) for i in synthetic_stream(500)]
    lines = SHARED_DATA / "uci-news-aggregator-sample.jsonl"
    if lines.exists():  # (6,366 real headlines and summaries, when the data is there)
        import json

        with lines.open(encoding="utf-8") as f:
            texts += [(d["title"], d.get("summary") or "") for d in map(json.loads, f)]
    for title, summary in texts:
        assert _seen(pure.features(title, summary)) == _seen(text.features(title, summary))


def _implementation_in(package: Path, env_extra: dict[str, str] | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "AGGREGATOR_PURE_PYTHON"}
    env.update(PYTHONPATH=str(package.parent), **(env_extra or {}))
    code = (
        "from aggregator.dedup import cluster as c, text as t;"
        "print(c.IMPLEMENTATION, '|', c.WHY_PURE, '|', t.IMPLEMENTATION, '|', t.WHY_PURE)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=package.parent, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_an_edited_source_is_never_shadowed_by_an_old_build(tmp_path):
    need_compiled()
    need_compiled(text)
    copy = tmp_path / "aggregator"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert _implementation_in(copy) == "compiled |  | compiled |"
    with open(copy / "dedup" / "cluster.py", "a", encoding="utf-8") as f:
        f.write("\n# an edit after the build\n")
    stale = "built from another version of {} (reinstall to rebuild it)"
    assert _implementation_in(copy) == f"pure Python | {stale.format('cluster.py')} | compiled |"
    with open(copy / "dedup" / "text.pxd", "a", encoding="utf-8") as f:
        f.write("\n# an edit after the build\n")
    assert _implementation_in(copy) == (
        f"pure Python | {stale.format('cluster.py')} | pure Python | {stale.format('text.py')}"
    )


def test_the_pure_module_can_be_asked_for():
    need_compiled()
    out = _implementation_in(PACKAGE, {"AGGREGATOR_PURE_PYTHON": "1"})
    assert out == "pure Python | AGGREGATOR_PURE_PYTHON=1 | pure Python | AGGREGATOR_PURE_PYTHON=1"


@pytest.mark.slow
def test_an_install_without_a_c_compiler_gives_the_pure_clusterer(tmp_path):
    """pip install on a machine with no C compiler (CC=/bin/false) succeeds, without the build,
    and the installed package runs the pure module, saying why."""
    src, root = tmp_path / "src", PACKAGE.parent
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(root / name, src / name)
    shutil.copytree(
        PACKAGE, src / "aggregator", ignore=shutil.ignore_patterns("__pycache__", "*.so")
    )
    target = tmp_path / "site"
    env = dict(os.environ, CC="/bin/false")
    env.pop("AGGREGATOR_PURE_PYTHON", None)
    out = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", target, src],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    installed = target / "aggregator" / "dedup"
    assert (installed / "cluster.py").exists() and (installed / "cluster.pxd").exists()
    assert (installed / "text.py").exists() and (installed / "text.pxd").exists()
    assert not list(installed.glob("_ccluster*")) and not list(installed.glob("_ctext*"))
    unbuilt = "pure Python | not built (no C compiler or Cython at install time)"
    assert _implementation_in(target / "aggregator") == f"{unbuilt} | {unbuilt}"


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.25, 3.0]), max_size=40), st.integers(1, 6))
def test_the_top_candidates_are_those_a_stable_sort_keeps(accs, k):
    """``_top`` picks in one pass what ``sorted(..., reverse=True)[:k]`` would: the largest
    first, ties in the order the stories were touched (it breaks ties between candidates)."""
    stories = []
    for i, a in enumerate(accs):
        story = cluster.StoryState(i, 0.0, 0.0)
        story.acc = a
        stories.append(story)
    expected = [s.id for s in sorted(stories, key=lambda s: s.acc, reverse=True)[:k]]
    tops = [cluster._top]  # (the pure function: the module swaps in only the classes)
    if cluster.IMPLEMENTATION == "compiled":
        tops.append(sys.modules["aggregator.dedup._ccluster"]._top)
    for top in tops:
        assert [s.id for s in top(stories, k)] == expected


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0, 1.5, 2.25, 7.0]), max_size=80))
@example([0.5] * 64 + [1.0])  # (one more than the arrays hold)
@example([0.5, 1.0] * 32)
def test_an_entry_s_tokens_are_looked_up_in_the_order_a_stable_sort_gives(weights):
    """``_heaviest_first`` orders an entry's token records as ``sorted(..., reverse=True)`` by
    weight: the heaviest first, ties in the entry's order (it decides which tokens are looked
    up, and in what order the candidates are met). The compiled build sorts up to SORT_SPACE
    by insertion in C arrays, more with the sort (up to 80 here: both ways)."""
    recs = []
    for i, w in enumerate(weights):
        r = cluster.TokenStats(tok=f"t{i}")
        r.w = w
        recs.append(r)
    expected = [r.tok for r in sorted(recs, key=lambda r: r.w, reverse=True)]
    builds = [pure_module().Clusterer(ClusterSettings())]
    if cluster.IMPLEMENTATION == "compiled":
        builds.append(cluster.Clusterer(ClusterSettings()))  # (its records are the compiled ones)
    for c in builds:
        assert [r.tok for r in c._heaviest_first(recs)] == expected
    assert [r.w for r in recs] == weights  # (the records themselves are left as they were)


def test_summary_tokens_share_the_weight_object_they_were_given():
    """Every story's profile holds its tokens' weights: a float object per summary token (the
    compiled build's, when ``summary_weight`` was a C double) took 39 MB more for the peer
    benchmark's 50,500 entries than one shared object."""
    weight = float("0.25")  # (an object of its own, not a constant another module shares)
    f = text.features(
        "Harbour strike", "dockers walk out over pay, shifts and 2026 rosters", 60, weight
    )
    summary = [w for tok, w in f.weights.items() if tok not in ("harbour", "strike")]
    assert len(summary) >= 5 and all(w is weight for w in summary)


def test_both_builds_take_a_subclass_of_str():
    """The library's callers may pass str subclasses (markup types, numpy strings): the
    compiled build must take them as the pure one does (a C signature typed ``str`` refused
    them with a TypeError)."""

    class Markup(str):
        pass

    pure = pure_module(text)
    title, summary = Markup("Quake of 6.8 hits Chile"), Markup("Rescuers’ search in 2026 goes on")
    for build in (pure, text):
        assert build.words(title) == ["quake", "of", "6.8", "hits", "chile"]
        assert build.first_words(summary, 3) == ["rescuers", "search", "in"]
        assert _seen(build.features(title, summary)) == _seen(pure.features(str(title), summary))


def _builds() -> list:
    """text.py's builds: the pure module, and the compiled one when it is in use."""
    return [pure_module(text)] + ([text] if text.IMPLEMENTATION == "compiled" else [])


@hypothesis_settings(max_examples=400, deadline=None)
@given(
    st.one_of(_TEXTS, _ANY),
    st.one_of(_TEXTS, _ANY),
    st.integers(0, 30),
    st.sampled_from([0.5, 0.25, 1.0, 1.5]),
)
def test_packed_features_unpack_to_the_same_features(title, summary, k, weight):
    """A round's worker computes the features of the clustering stage's next batch and sends
    them packed (ClusteringStage's ``prefetch``): what the clusterer unpacks must be what it
    would have computed, in order, its summary tokens weighing the very object of its settings,
    each token with its record."""
    weight = float(str(weight))  # (an object of its own)
    for tb in _builds():
        f = tb.features(title, summary, k, weight)
        for cb in _cluster_builds():
            c = cb.Clusterer(cb.ClusterSettings(summary_weight=weight))
            g, recs = c._unpack(tb.pack(f))
            assert _seen(g) == _seen(f)
            assert all(w == 1.0 or w is weight for w in g.weights.values())
            assert [r.tok for r in recs] == list(g.weights)
            assert all(c.stats[tok] is r for tok, r in zip(g.weights, recs, strict=True))


def test_unpacked_tokens_are_the_clusterer_s_own_strings():
    """The clusterer keeps each token in every story that has it: one string object per token
    (its record's), or memory grows by a copy per entry (100 MB for the bench's 50,500 entries).
    Two entries with the same words, unpacked from strings of their own, share their tokens
    with each other and with the stories they make."""
    title, summary = "Harbour strikes spread to three ports", "Dockers walk out over pay rosters"
    for tb in _builds():
        for cb in _cluster_builds():
            c = cb.Clusterer()
            packed = tb.pack(tb.features(title, summary))
            made = c.add(cb.Item(1, "s", None, "", "", datetime(2026, 1, 1, tzinfo=UTC), packed))
            story = c.stories[made.story_id].single
            # (each unpack splits strings of its own: its tokens are new objects)
            one, _ = c._unpack(tb.pack(tb.features(title, summary)))
            two, _ = c._unpack(tb.pack(tb.features(title, summary)))
            assert list(one.weights) == list(two.weights) == list(story)
            for a, b, s in zip(one.weights, two.weights, story, strict=True):
                assert a is b is s is c.stats[a].tok


def test_a_record_dropped_while_its_batch_is_placed_is_looked_up_again():
    """The entries ``pack_many`` packs share their batch's vocabulary, whose records the
    clusterer keeps while it places them. A record dropped meanwhile (the stories with its
    token left the window) is not the token's any more: the next entry with the token gets
    the token's record anew, as it does when its features come from its text."""
    first = datetime(2026, 1, 1, tzinfo=UTC)
    later = first + timedelta(days=30)
    texts = [
        ("Harbour strikes spread to three ports", "Dockers walk out over pay rosters", first),
        ("Harbour strikes end after pay deal", "Dockers return to the three ports", later),
    ]
    for tb in _builds():
        fs = [tb.features(title, summary) for title, summary, _ in texts]
        for cb in _cluster_builds():
            seen = []
            for packed in (None, tb.pack_many(fs)):
                c = cb.Clusterer(cb.ClusterSettings(window_hours=12))
                items = [
                    cb.Item(n, "s", None, title, summary, when)
                    if packed is None
                    else cb.Item(n, "s", None, "", "", when, packed[n])
                    for n, (title, summary, when) in enumerate(texts)
                ]
                c.add(items[0])
                c.evict(later.timestamp())  # the first story leaves the window,
                c._forget_idle()  # and the records only it needed are dropped
                dropped = set(fs[0].weights) - set(c.stats)
                assert dropped & set(fs[1].weights)  # (some of them the second entry has)
                c.add(items[1])
                assert all(c.stats[tok].df == 1 for tok in fs[1].weights)
                seen.append((c.df, c.sf, sorted(c.stories)))
            assert seen[0] == seen[1]


def _cluster_builds() -> list:
    """cluster.py's builds: the pure module, and the compiled one when it is in use."""
    return [pure_module(cluster)] + ([cluster] if cluster.IMPLEMENTATION == "compiled" else [])


def test_packed_features_of_real_headlines_unpack_alike():
    texts = [(i.title, i.summary) for i in synthetic_stream(500)]
    lines = SHARED_DATA / "uci-news-aggregator-sample.jsonl"
    if lines.exists():
        import json

        with lines.open(encoding="utf-8") as f:
            texts += [(d["title"], d.get("summary") or "") for d in map(json.loads, f)]
    for build in _builds():
        c = cluster.Clusterer()
        for title, summary in texts:
            f = build.features(title, summary)
            assert _seen(c._unpack(build.pack(f))[0]) == _seen(f)


def test_items_with_packed_features_are_placed_as_their_text_is():
    """ClusteringStage's prefetched items carry their features packed, and no text: each build
    must place them exactly as it places the same entries from their title and summary."""
    import dataclasses

    kw = {"window_hours": 12, "max_postings": 3, "merge_threshold": 0.1, "summary_weight": 0.4}
    items = synthetic_stream(1500)
    builds = [cluster] + ([pure_module()] if cluster.IMPLEMENTATION == "compiled" else [])
    for build in builds:
        s = build.ClusterSettings(**kw)
        # in batches of 400, as the stage's worker packs a batch: each its own vocabulary
        packed = []
        for at in range(0, len(items), 400):
            batch = items[at : at + 400]
            fs = [text.features(i.title, i.summary, s.summary_tokens, 0.4) for i in batch]
            packed += [
                dataclasses.replace(i, title="", summary="", features=p)
                for i, p in zip(batch, text.pack_many(fs), strict=True)
            ]
        from_text = build.Clusterer(s).add_many(items)
        assert {a.reason.split(":")[0] for a in from_text} >= {"new", "same-url", "similar"}
        assert [tuple(a) for a in build.Clusterer(s).add_many(packed)] == [
            tuple(a) for a in from_text
        ]
