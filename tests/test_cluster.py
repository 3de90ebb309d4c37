"""The pure clusterer: each signal, chaining, time, corrections, determinism."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from aggregator.dedup.cluster import Clusterer, ClusterSettings, Item
from aggregator.dedup.text import features, first_words, stem, words

from .conftest import collections_during

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)

# Unrelated headlines, so that token statistics look like a real stream.
BACKGROUND = [
    "Central bank signals pause in rate hikes",
    "Storm leaves thousands without power in Texas",
    "Tech giant reports record quarterly profit",
    "Football club sacks manager after losing run",
    "Election officials count ballots in close race",
    "New vaccine trial shows promising results",
    "Oil prices fall as supply concerns ease",
    "Film festival opens with documentary premiere",
    "Airline cancels flights over pilot strike",
    "Scientists discover new species of frog",
    "City budget vote delayed amid protests",
    "Stock markets rally on jobs report",
    "Wildfire forces evacuations in California hills",
    "Court blocks controversial immigration rule",
    "Company recalls cars over brake defect",
    "Museum returns looted artefacts",
    "Heatwave breaks temperature records in Spain",
    "Parliament passes new data privacy law",
    "Police arrest suspect in jewellery heist",
    "Singer announces world tour dates",
    "Nurses strike over pay in London hospitals",
    "Teachers threaten strike over class sizes",
    "Rail strike disrupts commuters in France",
    "Power cut hits northern suburbs overnight",
    "Coast guard rescues fishermen off Cornwall",
    "Magnitude of budget gap surprises analysts",
    "Hunger strike enters third week",
    "Lightning strike sparks forest fire",
    "Region braces for floods as rivers rise",
    "Minor damage reported after storm",
    "Ministers hit back at critics of tax plan",
    "Northern town celebrates centenary",
    "Union votes to strike at car plant",
    "Strong dollar hits exporters",
    "Tourists return to coast after season delay",
    "Causes of crash still unclear",
]


def stream(c: Clusterer, titles, start=T0 - timedelta(hours=5), step=timedelta(minutes=7)):
    t = start
    for i, title in enumerate(titles):
        c.add(Item(100_000 + i, f"bg{i}", None, title, "", t))
        t += step


def item(
    i: int,
    title: str,
    t: datetime,
    source: str | None = None,
    url: str | None = None,
    summary: str = "",
) -> Item:
    return Item(i, source or f"s{i}", url, title, summary, t)


def test_words_stems_and_numbers():
    assert words("Quake's toll: 6.8 magnitude, 2017 — U.S. hit") == [
        "quake",
        "toll",
        "6.8",
        "magnitude",
        "2017",
        "u.s",
        "hit",
    ]
    assert stem("strikes") == "strike" and stem("stories") == "story" and stem("press") == "press"
    f = features("Strike in 2017 after 6.8 quake", "The 2018 report")
    assert f.years == {"2017", "2018"} and f.decimals == {"6.8"}
    assert "in" not in f.weights and f.weights["strike"] == 1.0
    assert f.weights["report"] == 0.5


def test_same_event_from_several_outlets_is_one_story():
    c = Clusterer()
    stream(c, BACKGROUND)
    titles = [
        "Magnitude 6.8 earthquake strikes off northern Chile coast",
        "Strong 6.8 quake hits northern Chile near Antofagasta",
        "Chile earthquake: 6.8 tremor rocks Antofagasta region",
        "Northern Chile earthquake of magnitude 6.8 causes minor damage",
    ]
    got = [c.add(item(i, t, T0 + timedelta(minutes=10 * i))) for i, t in enumerate(titles)]
    assert len({c.resolve(a.story_id) for a in got}) == 1
    assert got[0].reason == "new" and got[1].reason.startswith("similar")
    assert c.stories[c.resolve(got[0].story_id)].n == 4


def test_different_quakes_days_apart_stay_apart():
    c = Clusterer()
    stream(c, BACKGROUND)
    first = [
        c.add(item(i, t, T0 + timedelta(minutes=10 * i)))
        for i, t in enumerate(
            [
                "Magnitude 6.8 earthquake strikes northern Chile",
                "Strong 6.8 quake hits northern Chile",
            ]
        )
    ]
    later = T0 + timedelta(days=2)
    second = [
        c.add(item(10 + i, t, later + timedelta(minutes=10 * i)))
        for i, t in enumerate(
            ["Magnitude 5.1 earthquake shakes central Chile", "Central Chile hit by 5.1 earthquake"]
        )
    ]
    assert c.resolve(first[0].story_id) == c.resolve(first[1].story_id)
    assert c.resolve(second[0].story_id) == c.resolve(second[1].story_id)
    assert c.resolve(first[0].story_id) != c.resolve(second[0].story_id)


def test_different_figures_alone_keep_similar_headlines_apart():
    """Same words, same hour, different magnitudes: the figures signal halves the score."""
    on = Clusterer()
    off = Clusterer(ClusterSettings(conflict_penalty=1.0))
    for c in (on, off):
        stream(c, BACKGROUND)
    a = item(1, "Magnitude 6.8 earthquake strikes Chile", T0)
    b = item(2, "Magnitude 5.1 earthquake strikes Chile", T0 + timedelta(minutes=30))
    score_on, why_on = on.pair_score(a, b)
    score_off, _ = off.pair_score(a, b)
    assert why_on.different_figures
    assert score_on == score_off * 0.5


def test_years_signal():
    c = Clusterer()
    stream(c, BACKGROUND)
    a = item(1, "Dock workers strike in 2017 over pay at Rotterdam port", T0)
    b = item(2, "Rotterdam port dock workers strike over pay in 2018", T0 + timedelta(hours=1))
    same = item(3, "Rotterdam port dock workers strike over pay in 2017", T0 + timedelta(hours=1))
    s_diff, why = c.pair_score(a, b)
    s_same, why_same = c.pair_score(a, same)
    assert why.different_years and not why_same.different_years
    assert s_diff < s_same


def test_time_distance_lowers_the_score():
    c = Clusterer()
    stream(c, BACKGROUND)
    a = item(1, "Rotterdam dock workers strike over pay", T0)
    near = item(2, "Rotterdam dockers strike over pay", T0 + timedelta(hours=2))
    far = item(3, "Rotterdam dockers strike over pay", T0 + timedelta(hours=30))
    s_near, _ = c.pair_score(a, near)
    s_far, why = c.pair_score(a, far)
    assert s_far < s_near * 0.1
    assert why.hours_apart == 30


def test_no_chaining_through_one_member():
    """A~B and B~C but A!~C: C joins only if it matches the story {A, B}, not B alone."""
    c = Clusterer()
    stream(c, BACKGROUND)
    a = item(1, "Volcano erupts in Iceland near Grindavik town", T0)
    b = item(
        2,
        "Iceland volcano erupts near Grindavik as Blue Lagoon spa shuts",
        T0 + timedelta(minutes=20),
    )
    cc = item(3, "Blue Lagoon spa shuts doors to tourists", T0 + timedelta(minutes=40))
    threshold = c.s.threshold
    assert c.pair_score(a, b)[0] >= threshold  # A ~ B
    assert c.pair_score(b, cc)[0] >= threshold  # B ~ C
    assert c.pair_score(a, cc)[0] < threshold  # A !~ C
    sa, sb, sc = (c.add(x) for x in (a, b, cc))
    assert c.resolve(sa.story_id) == c.resolve(sb.story_id)
    assert c.resolve(sc.story_id) != c.resolve(sa.story_id)


def test_same_canonical_url_is_one_article_one_story():
    c = Clusterer()
    stream(c, BACKGROUND)
    a = c.add(item(1, "Completely different headline words", T0, url="https://x.example/a"))
    b = c.add(
        item(2, "Nothing in common at all here", T0 + timedelta(hours=1), url="https://x.example/a")
    )
    assert b.reason == "same-url" and b.story_id == a.story_id


def test_forced_story_and_blocks_are_respected():
    c = Clusterer()
    stream(c, BACKGROUND)
    a = c.add(item(1, "Rotterdam dock workers strike over pay", T0), story_id=500)
    assert a.story_id == 500 and a.reason == "manual"
    c.add(item(2, "Rotterdam dockers strike over pay", T0), story_id=501)
    c.block(500, 501)
    c.add(item(3, "Rotterdam port strike over pay continues", T0 + timedelta(minutes=5)))
    c.add(item(4, "Rotterdam dock strike over pay day two", T0 + timedelta(minutes=6)))
    assert 500 in c.stories and 501 in c.stories  # never merged


def test_deterministic():
    def run():
        c = Clusterer()
        stream(c, BACKGROUND)
        return [
            c.resolve(c.add(item(i, t, T0 + timedelta(minutes=i))).story_id)
            for i, t in enumerate(BACKGROUND * 2)
        ]

    assert run() == run()


def test_old_stories_leave_memory():
    c = Clusterer(ClusterSettings(window_hours=24))
    for day in range(10):
        for i, t in enumerate(BACKGROUND):
            c.add(item(day * 100 + i, f"{t} day{day}", T0 + timedelta(days=day, minutes=i)))
    c.evict((T0 + timedelta(days=9, hours=1)).timestamp())
    assert len(c.stories) <= 2 * len(BACKGROUND)
    assert all(st.last >= (T0 + timedelta(days=8)).timestamp() for st in c.stories.values())


def test_add_many_is_add_in_order_and_restores_the_collector():
    import gc

    titles = BACKGROUND * 2
    items = [item(i, t, T0 + timedelta(minutes=i)) for i, t in enumerate(titles)]
    one = Clusterer()
    expected = [one.add(it) for it in items]
    assert gc.isenabled()
    assert Clusterer().add_many(items) == expected
    assert gc.isenabled()
    forced = Clusterer().add_many(items[:3], [7, 7, 9])
    assert [a.story_id for a in forced] == [7, 7, 9]
    with pytest.raises(ValueError):  # an error inside the batch still turns the collector on
        Clusterer().add_many(items[:2], [1])
    assert gc.isenabled()
    gc.disable()
    try:  # and leaves it off when it was off
        Clusterer().add_many(items[:2])
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_token_too_common_to_look_up_leaves_the_index_and_comes_back_when_rare():
    c = Clusterer(ClusterSettings(max_postings=2, window_hours=24))  # lists end above 8
    old = T0 - timedelta(hours=30)
    # ten unrelated stories that all name "zanzibar", a day and more before the rest
    for i, t in enumerate(BACKGROUND[:10]):
        c.add(item(i, f"{t} zanzibar", old + timedelta(minutes=i)))
    assert c.sf["zanzibar"] == 10 and "zanzibar" not in c.postings
    # a day later the old stories leave the window; one new story names the word again
    first = c.add(item(50, "Zanzibar ferry capsizes near Stone Town harbour", T0))
    c.evict(T0.timestamp())
    assert c.sf["zanzibar"] == 1
    assert [st.id for st in c.postings["zanzibar"]] == [first.story_id]  # indexed again
    again = c.add(item(51, "Ferry capsizes off Zanzibar, Stone Town harbour", T0))
    assert again.story_id == first.story_id


def test_a_token_s_record_outlives_its_stories_only_while_its_idf_is_memoized():
    """A token whose last story leaves the window keeps its record (counts zero) while the idf
    memoized for it this epoch may still be read; the next epoch drops it. So does a token
    only looked up (``pair_score``), whose entry never joined a story."""
    c = Clusterer(ClusterSettings(window_hours=1))
    c.add(item(1, "Zanzibar ferry capsizes near Stone Town harbour", T0))
    memo = c.stats["zanzibar"].idf
    c.evict((T0 + timedelta(hours=3)).timestamp())
    kept = c.stats["zanzibar"]
    assert (kept.df, kept.sf, kept.idf) == (0, 0, memo) and kept.epoch == c._epoch
    assert "zanzibar" not in c.sf and "zanzibar" not in c.df and "zanzibar" not in c.postings
    c.pair_score(item(2, "Quokka census", T0), item(3, "Quokka census results", T0))
    assert "quokka" in c.stats
    c.add(item(4, "Unrelated budget vote in parliament", T0 + timedelta(hours=3)))  # an epoch
    assert "zanzibar" not in c.stats and "quokka" not in c.stats
    assert c.stats["budget"].df == 1  # (a token of a story in the window stays)


def synthetic_stream(n: int, seed: int = 7) -> list[Item]:
    """Entries about a few hundred made-up events over five days: shared words, summaries,
    years and figures, repeated links; enough to merge stories, evict them and cap the index."""
    import random

    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(3000)]
    events = [
        (rng.sample(vocab, 6), rng.choice(["2017", "2018", ""]), rng.choice(["6.8", "5.1", ""]))
        for _ in range(300)
    ]
    out = []
    for i in range(n):
        e = (i * 7 + rng.randrange(40)) % len(events)
        words_, year, figure = events[e]
        title = " ".join(rng.sample(words_, 4) + rng.sample(vocab, 2) + [year, figure])
        summary = " ".join(rng.sample(words_, 3) + rng.sample(vocab, 12))
        t = T0 + timedelta(minutes=2 * i + rng.randrange(90))
        url = f"https://o{i % 9}.example/{e}" if i % 5 == 0 else None
        out.append(Item(i, f"o{i % 9}", url, title, summary, t))
    return out


def test_a_dumped_and_loaded_clusterer_goes_on_exactly_as_the_original():
    import io

    # a short window, a small index cap and a low merge threshold: the first half evicts
    # stories, drops tokens from the index and merges stories, so all of it is in the dump
    settings = ClusterSettings(window_hours=12, max_postings=3, merge_threshold=0.1)
    items = synthetic_stream(5000)
    half = len(items) // 2
    original = Clusterer(settings)
    first = original.add_many(items[:half])
    assert original.merged_into and len(original.stories) < len({a.story_id for a in first})
    assert any(tok not in original.postings for tok in original.sf)
    buf = io.BytesIO()
    original.dump(buf, chunk=100)  # several chunks of stories and of the index
    buf.seek(0)
    loaded = Clusterer.load(buf, settings)
    assert loaded.stories.keys() == original.stories.keys()
    assert {t: [s.id for s in p] for t, p in loaded.postings.items()} == {
        t: [s.id for s in p if not s.evicted] for t, p in original.postings.items()
    }
    epoch = original._epoch  # token statistics, and the idf memoized in this epoch

    def stats(c):
        return {t: (r.df, r.sf, r.idf if r.epoch == epoch else None) for t, r in c.stats.items()}

    assert loaded._epoch == epoch and stats(loaded) == stats(original)
    assert loaded._idle == original._idle
    # the rest of the stream: same assignments, scores and reasons, one by one
    assert loaded.add_many(items[half:]) == original.add_many(items[half:])
    assert loaded.stories.keys() == original.stories.keys()


def _cached_core_weights_match_the_core(c: Clusterer) -> int:
    """Every story's cached core weights go with its core, token for token in its order, and
    those of this idf epoch are what the core gives now; how many were checked. A core that
    is a tuple (a one-member story's) gives its tokens their weight in that member: 1 for the
    first ``n_title`` (the title's), summary_weight for the rest."""
    checked = 0
    for story in c.stories.values():
        cw = story.core_weights
        if cw is None:
            continue
        epoch, weights, total = cw
        core = story.core
        assert core is not None and len(weights) == len(core), story
        if type(core) is tuple:
            shares = [1.0 if i < story.n_title else c.s.summary_weight for i in range(len(core))]
            core = dict(zip(core, shares, strict=True))
        if epoch == c._epoch:  # (the idf memo is cleared at each epoch)
            assert list(weights) == [c.idf(tok) * share for tok, share in core.items()]
            assert total == sum(weights)
            checked += 1
    return checked


def test_the_cached_core_weights_follow_the_core_through_joins_merges_and_dumps():
    """Only the weights are cached; the tokens they belong to are the core's own (the cache
    is dropped whenever the core is made anew, and a core a one-member story shared with its
    tokens is copied, in order, before those change)."""
    import io

    settings = ClusterSettings(window_hours=12, max_postings=3, merge_threshold=0.1)
    items = synthetic_stream(4000)
    c = Clusterer(settings)
    c.add_many(items[:2000])
    assert c.merged_into and any(s.n > 1 for s in c.stories.values())
    assert _cached_core_weights_match_the_core(c) > 0
    buf = io.BytesIO()
    c.dump(buf, chunk=100)
    buf.seek(0)
    loaded = Clusterer.load(buf, settings)
    assert _cached_core_weights_match_the_core(loaded) > 0
    loaded.add_many(items[2000:])
    assert _cached_core_weights_match_the_core(loaded) > 0


def test_dump_and_load_do_not_run_the_cyclic_collector():
    # a snapshot is millions of objects, none of them garbage: a collection pass during the
    # load walked all of them again and again (0.3 s of a 0.85 s load for 50,000 entries)
    import gc
    import io

    c = Clusterer()
    c.add_many(synthetic_stream(600))
    buf = io.BytesIO()
    with collections_during() as during_dump:
        c.dump(buf, chunk=50)
    buf.seek(0)
    with collections_during() as during_load:
        loaded = Clusterer.load(buf, ClusterSettings())
    assert gc.isenabled()  # on again afterwards
    # (at most the one the allocations made meanwhile trigger once the pause is over)
    assert len(during_dump) <= 1 and len(during_load) <= 1, (during_dump, during_load)
    assert loaded.stories.keys() == c.stories.keys()


def test_a_dump_holds_a_story_token_that_has_no_statistics():
    """A dump writes a story's tokens as their places in the statistics' list of tokens. One
    without statistics (none should be: each member's tokens are counted) is added to that
    list by the chunk that meets it, and read back as it was."""
    import io

    c = Clusterer()
    c.add_many(synthetic_stream(200))
    many = next(s for s in c.stories.values() if s.tokens is not None)
    one = next(s for s in c.stories.values() if s.single is not None)
    lost = [next(iter(many.tokens)), one.single[-1]]
    for tok in lost:
        del c.stats[tok]
    buf = io.BytesIO()
    c.dump(buf, chunk=50)
    buf.seek(0)
    loaded = Clusterer.load(buf, ClusterSettings())
    assert loaded.stories[many.id].tokens == many.tokens
    assert loaded.stories[one.id].single == one.single
    assert all(tok not in loaded.stats for tok in lost)
    assert {t: [s.id for s in p] for t, p in loaded.postings.items()} == {
        t: [s.id for s in p if not s.evicted] for t, p in c.postings.items()
    }


def test_loading_a_truncated_dump_fails_loudly():
    import io
    import pickle

    c = Clusterer()
    c.add_many(synthetic_stream(300))
    buf = io.BytesIO()
    c.dump(buf, chunk=50)
    with pytest.raises((EOFError, pickle.UnpicklingError, ValueError)):
        Clusterer.load(io.BytesIO(buf.getvalue()[: len(buf.getvalue()) // 2]), ClusterSettings())


# words of 1 to 40 letters, digits and characters NFKC or lower() change, between separators
# (apostrophes, a combining accent, punctuation): cuts at 8 characters a word fall anywhere
_WORD_CHARS = st.sampled_from(list("abz19éEİß\ufb01"))
_SEPARATORS = st.sampled_from([" ", ", ", "'", "’", ".", " - ", "_", "\u0301 ", "\u00a0", "'s "])
_TEXTS = st.lists(st.tuples(st.text(_WORD_CHARS, min_size=1, max_size=40), _SEPARATORS)).map(
    lambda parts: "".join(w + sep for w, sep in parts)
)


@hypothesis_settings(max_examples=400, deadline=None)
@given(_TEXTS, st.integers(0, 12))
def test_the_first_words_of_a_text_are_those_of_the_whole_text(text, k):
    assert first_words(text, k) == words(text)[:k]


@hypothesis_settings(max_examples=400, deadline=None)
@given(st.text(st.characters(max_codepoint=127)))
def test_ascii_text_is_split_into_the_same_words_by_its_faster_pattern(text):
    from aggregator.dedup import text as T

    assert T._WORD_ASCII.findall(text) == T._WORD.findall(text)


def test_a_long_summary_counts_its_first_words_only():
    long = " ".join(f"word{i} zeta{i}" for i in range(5000))  # ~70,000 characters
    f = features("Title", long, summary_tokens=60)
    assert len(f.weights) == 61 and "zeta29" in f.weights and "word30" not in f.weights


def test_one_member_stories_scored_without_looking_up_their_tokens_score_the_same():
    """A one-member story's tokens all count fully when kappa * summary_weight >= 1, and
    scoring skips their lookup then; the full computation must give the same stories."""
    items = synthetic_stream(3000)
    fast, exact = Clusterer(), Clusterer()
    assert fast._single_full
    exact._single_full = False  # every candidate's tokens looked up
    a, b = fast.add_many(items), exact.add_many(items)
    assert [(x.story_id, x.score, x.reason) for x in a] == [
        (x.story_id, x.score, x.reason) for x in b
    ]
    assert sum(1 for st in fast.stories.values() if st.n == 1) > 100  # the shortcut was used
    # a weight for which a one-member story's summary tokens do not count fully
    assert not Clusterer(ClusterSettings(kappa=1.5, summary_weight=0.5))._single_full


@pytest.mark.parametrize(
    ("a", "b", "two"),
    [
        ({}, {}, False),
        ({"x": 1}, {"x": 1}, False),
        ({"x": 1, "y": 1}, {"y": 2, "x": 2}, True),
        ({"x": 1, "y": 1, "z": 1}, {"z": 1}, False),
        ({"a": 1, "b": 1}, {"a": 1, "c": 1}, False),
    ],
)
def test_shares_two(a, b, two):
    from aggregator.dedup.cluster import _shares_two, _shares_two_of

    assert _shares_two(a, b) is two and _shares_two(b, a) is two
    # a one-member story's tokens are a tuple: the same answer
    assert _shares_two_of(tuple(a), b) is two and _shares_two_of(tuple(b), a) is two


def test_a_one_member_story_keeps_its_tokens_as_a_tuple_until_a_second_joins():
    """Most stories in a window have one member: theirs are its tokens as a tuple, the title's
    first, with no dict beside them (a dict took 2.5x the memory), shared as the story's core
    and through a dump. A second member turns them into the dict of summed weights."""
    import io

    settings = ClusterSettings()
    c = Clusterer(settings)
    a = item(
        1, "Volcano erupts near Reykjavik airport", T0, summary="Flights grounded as ash spreads"
    )
    first = c.add(a)
    story = c.stories[first.story_id]
    fa = features(a.title, a.summary, settings.summary_tokens, settings.summary_weight)
    assert story.tokens is None and story.single == tuple(fa.weights)
    assert story.n_title == sum(1 for w in fa.weights.values() if w == 1.0) > 0
    assert c._token_dict(story) == fa.weights
    assert c._core(story) is story.single  # (summary_weight >= core_share: all of it)

    buf = io.BytesIO()
    c.dump(buf)
    buf.seek(0)
    loaded = Clusterer.load(buf, settings).stories[first.story_id]
    assert loaded.tokens is None and loaded.single == story.single
    assert loaded.n_title == story.n_title and loaded.core is loaded.single

    b = item(2, "Reykjavik airport shut as volcano erupts", T0, summary="Ash cloud grounds flights")
    second = c.add(b)
    assert second.story_id == first.story_id and story.n == 2
    fb = features(b.title, b.summary, settings.summary_tokens, settings.summary_weight)
    summed = dict(fa.weights)
    for tok, w in fb.weights.items():
        summed[tok] = summed.get(tok, 0.0) + w
    assert story.single is None and story.tokens == summed


def test_a_one_member_story_whose_summary_is_below_the_core_share_has_its_title_as_core():
    settings = ClusterSettings(summary_weight=0.2, core_share=0.25)
    c = Clusterer(settings)
    a = item(
        1, "Volcano erupts near Reykjavik airport", T0, summary="Flights grounded as ash spreads"
    )
    story = c.stories[c.add(a).story_id]
    core = c._core(story)
    assert core == story.single[: story.n_title] and len(core) < len(story.single)
    (tokens, weights), total = c._core_weights(story)
    assert tokens is core and list(weights) == [c.idf(tok) for tok in core]
    assert total == sum(weights)
