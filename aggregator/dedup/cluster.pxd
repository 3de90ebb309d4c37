# C types for the compiled build of cluster.py (see setup.py). The pure module ignores this file.
# Every attribute the classes below set must be declared here: a compiled class has no __dict__
# (tests/test_compiled.py runs the same stream through both builds).
cimport cython
# math.log and math.sqrt (of positive numbers here) as the C functions, which Python's call too:
# the same results, without a Python call each (idf, with its two logs, was a tenth of placing)
from libc cimport math


@cython.locals(found=bint)
cpdef bint _shares_two(dict a, dict b)


@cython.locals(found=bint)
cpdef bint _shares_two_of(tuple seq, dict b)


cdef class StoryState:
    cdef public object id
    cdef public double first
    cdef public double last
    cdef public Py_ssize_t n
    cdef public dict tokens
    cdef public tuple single
    cdef public Py_ssize_t n_title
    cdef public object years
    cdef public object decimals
    cdef public str title_key
    cdef public list urls
    cdef public object core
    cdef public Py_ssize_t core_n
    cdef public object core_weights
    cdef public bint evicted
    cdef public double acc
    cdef public Py_ssize_t mark


@cython.locals(top=list, st=StoryState, o=StoryState, a=double, i=Py_ssize_t)
cpdef list _top(list touched, Py_ssize_t k)


cdef class TokenStats:
    cdef public Py_ssize_t df
    cdef public Py_ssize_t sf
    cdef public double idf
    cdef public Py_ssize_t epoch
    cdef public str tok
    cdef public list posting
    cdef public Py_ssize_t stale
    cdef public double w
    cdef public bint gone


# the snapshot's chunks (typed: the arrays are read in place, a story's fields set directly)
cpdef Py_ssize_t _number(str tok, dict index, list table, list new)


@cython.locals(n=Py_ssize_t, k=Py_ssize_t, st=StoryState, kind=Py_ssize_t,
               core_kind=Py_ssize_t, kinds=bytearray, tokens=dict, single=tuple, cw=tuple,
               marks=dict, keys=list, urls=list, new=list, m=Py_ssize_t,
               n_lens=Py_ssize_t, n_toks=Py_ssize_t, n_weights=Py_ssize_t, n_cores=Py_ssize_t,
               n_core_toks=Py_ssize_t, n_core_weights=Py_ssize_t, n_cw=Py_ssize_t,
               n_cw_w=Py_ssize_t, o=Py_ssize_t, li=Py_ssize_t, w=Py_ssize_t, co=Py_ssize_t,
               cli=Py_ssize_t, cwo=Py_ssize_t, cwi=Py_ssize_t, cwwo=Py_ssize_t,
               ids_v="long long[:]", times_v="double[:]", counts_v="long long[:]",
               toks_v="unsigned int[:]", lens_v="long long[:]", weights_v="double[:]",
               core_toks_v="unsigned int[:]", core_lens_v="long long[:]",
               core_weights_v="double[:]", cw_epochs_v="long long[:]",
               cw_lens_v="long long[:]", cw_totals_v="double[:]", url_counts_v="long long[:]")
cpdef tuple _pack_stories(list part, dict index, list table)


@cython.locals(new=list, toks=list, lens=list, ids=list, st=StoryState, m=Py_ssize_t,
               posting=list)
cpdef tuple _pack_postings(list part, dict index, list table)


@cython.locals(k=Py_ssize_t, j=Py_ssize_t, m=Py_ssize_t, o=Py_ssize_t, li=Py_ssize_t,
               w=Py_ssize_t, co=Py_ssize_t, cli=Py_ssize_t, cw=Py_ssize_t, cwi=Py_ssize_t,
               cwo=Py_ssize_t, uo=Py_ssize_t, st=StoryState, kind=Py_ssize_t,
               core_kind=Py_ssize_t, tokens=dict, single=tuple, kinds=bytes,
               ids="long long[:]", times="double[:]", counts="long long[:]",
               toks="unsigned int[:]", lens="long long[:]", weights="double[:]",
               core_toks="unsigned int[:]", core_lens="long long[:]", core_weights="double[:]",
               cw_epochs="long long[:]", cw_lens="long long[:]", cw_totals="double[:]",
               url_counts="long long[:]", keys=list, marks=dict, urls=list, new=list)
cpdef _unpack_stories(tuple chunk, list table, dict stories)


@cython.locals(k=Py_ssize_t, m=Py_ssize_t, o=Py_ssize_t, toks="unsigned int[:]",
               lens="long long[:]", new=list, r=TokenStats)
cpdef Py_ssize_t _unpack_postings(tuple chunk, list table, dict stories, dict stats) except -1


cdef class Clusterer:
    cdef public object s
    cdef public dict stories
    cdef public Py_ssize_t _index_cap
    cdef public dict stats
    cdef public dict url_story
    cdef public dict merged_into
    cdef public set blocked
    cdef public object next_id
    cdef public double _window
    cdef public Py_ssize_t _adds
    cdef public double _horizon
    cdef public list _idle
    cdef public double _n_log
    cdef public double _docs_log
    cdef public Py_ssize_t docs
    cdef public Py_ssize_t _epoch
    cdef public Py_ssize_t _next_epoch
    cdef public double _lift
    cdef public bint _single_full
    cdef public Py_ssize_t _stamp
    cdef object _vocabulary
    cdef list _vocab_tokens
    cdef list _vocab_records
    cdef const unsigned int[:] _vocab_numbers
    cdef double _sort_w[64]  # (SORT_SPACE)
    cdef Py_ssize_t _sort_at[64]

    @cython.locals(n=Py_ssize_t, i=Py_ssize_t, j=Py_ssize_t, r=TokenStats, w=double)
    cpdef list _heaviest_first(self, list recs)

    @cython.locals(r=TokenStats)
    cpdef double idf(self, str token)

    @cython.locals(isf=double, ief=double)
    cpdef double _idf(self, TokenStats r)

    cpdef TokenStats _looked_up(self, str token)

    @cython.locals(weights=dict, recs=list, r=TokenStats, tokens=list, records=list,
                   numbers="const unsigned int[:]", start=Py_ssize_t, mid=Py_ssize_t,
                   end=Py_ssize_t, i=Py_ssize_t, k=Py_ssize_t)
    cpdef tuple _unpack(self, tuple packed)

    cpdef _forget_batch(self)

    @cython.locals(weights=dict, recs=list, r=TokenStats)
    cpdef list _records(self, f)

    @cython.locals(r=TokenStats)
    cdef TokenStats _record(self, str tok)

    cpdef bint _active(self, StoryState st, double t)

    @cython.locals(n=Py_ssize_t, cut=double)
    cpdef object _core(self, StoryState st)

    cpdef dict _token_dict(self, StoryState st)

    @cython.locals(i=Py_ssize_t, single=tuple)
    cpdef double _single_weight(self, StoryState st, str tok)

    cpdef _after_growth(self, StoryState st, double t)

    @cython.locals(total=double, kappa=double, w=double, share=double, a=double, b=double,
                   to=double, score=double, gap_h=double, best_score=double,
                   max_post=Py_ssize_t, n=Py_ssize_t, o=StoryState, stats=dict, stamp=Py_ssize_t,
                   touched=list, single_full=bint, oc=double, otok=dict, tokens=dict,
                   r=TokenStats, posting=list)
    cpdef tuple _best_merge(self, StoryState st, double t)

    @cython.locals(total=double, w=double, unseen=double, fw=double, iw=double,
                   r=TokenStats, epoch=Py_ssize_t, i=Py_ssize_t, weights=dict)
    cpdef tuple _weights(self, f, list recs)

    @cython.locals(total=double, kappa=double, skipped=double, w=double, share=double, a=double,
                   bound=double, floor=double, exact=double, best_score=double, score=double,
                   lookups=Py_ssize_t, max_post=Py_ssize_t, max_lookups=Py_ssize_t, st=StoryState, n=Py_ssize_t,
                   c=double, single_full=bint, stamp=Py_ssize_t, touched=list, tokens=dict,
                   single=tuple, n_title=Py_ssize_t, i=Py_ssize_t, looked=set,
                   weights=dict, r=TokenStats, live=Py_ssize_t, posting=list,
                   not_looked_up=list)
    cpdef tuple _best_story(self, f, list recs, double t)

    @cython.locals(core_hit=double, core=double, score=double, ratio=double, gap_h=double,
                   core_w=double, cw="double[:]", i=Py_ssize_t)
    cpdef tuple _verify(self, StoryState st, f, dict weights, double coverage, double t)

    @cython.locals(total=double, w=double, share=double, n_title=Py_ssize_t, sw=double,
                   i=Py_ssize_t, n=Py_ssize_t, view="double[:]", iw=double, stats=dict,
                   r=TokenStats, epoch=Py_ssize_t)
    cpdef tuple _core_weights(self, StoryState st)

    @cython.locals(tokens=dict, fresh=bint, n_title=Py_ssize_t, r=TokenStats,
                   live=Py_ssize_t, i=Py_ssize_t, posting=list, weights=dict)
    cpdef _join(self, StoryState st, item, f, list recs, double t)
