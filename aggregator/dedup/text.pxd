# C types for the compiled build of text.py (see setup.py). The pure module ignores this file.
cimport cython


cdef inline bint _alnum(Py_UCS4 c) noexcept

@cython.locals(out=list, i=Py_ssize_t, start=Py_ssize_t, sep=Py_ssize_t, state=int, c=Py_UCS4)
cpdef list _scan(str text)

# (texts untyped: a subclass of str must be taken as the pure module takes it; what words
# scans is the lowered copy, a str)
@cython.locals(low=str, found=list, out=list, w=str)
cpdef list words(text)

@cython.locals(budget=Py_ssize_t, ws=list)
cpdef list first_words(text, Py_ssize_t k)

# (summary_weight stays a Python float: typed double, each summary token's weight in each
# story's profile was a float object of its own, 39 MB more for the bench's 50,500 entries)
@cython.locals(weights=dict, years=set, decimals=set, title_words=list, terms=dict,
               numbers=bint, w=str, s=str)
cpdef features(title, summary=*, Py_ssize_t summary_tokens=*, summary_weight=*)

@cython.locals(distinct=dict, vocabulary=list, out=list, start=Py_ssize_t, end=Py_ssize_t,
               mid=Py_ssize_t, title=bint, weights=dict, mine=list, tok=str, w=double)
cpdef list pack_many(fs)

cpdef tuple pack(f)
