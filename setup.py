"""Builds the optional compiled clusterer; everything else about the project is in pyproject.toml.

``aggregator/dedup/cluster.py`` is the clusterer's only source. When Cython is there (it is in
[build-system].requires, so a normal ``pip install`` has it), this compiles a copy of that file,
with the C types of ``cluster.pxd``, as the extension module ``aggregator.dedup._ccluster``:
about 1.4x the entries per second of the pure module, the same stories (tests/test_compiled.py).
The copy carries the digest of the two files it was built from, and ``cluster.py`` uses it only
while those files are unchanged, so an edited source is never shadowed by an old build.

Where it cannot be built (no C compiler, or AGGREGATOR_PURE_PYTHON=1 at install time), the
install goes on without it and the pure module runs.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).resolve().parent
DEDUP = HERE / "aggregator" / "dedup"


def source_digest() -> str:
    """Same as cluster.source_digest: the bytes of cluster.py, then of cluster.pxd."""
    h = hashlib.blake2b(digest_size=16)
    for name in ("cluster.py", "cluster.pxd"):
        h.update((DEDUP / name).read_bytes())
    return h.hexdigest()


def compiled_extensions() -> list[Extension]:
    if os.environ.get("AGGREGATOR_PURE_PYTHON") == "1":
        print("aggregator: AGGREGATOR_PURE_PYTHON=1, not building the compiled clusterer")
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("aggregator: Cython is missing, not building the compiled clusterer")
        return []
    root = HERE / "build" / "cython"
    out = root / "aggregator" / "dedup"
    out.mkdir(parents=True, exist_ok=True)
    source = (DEDUP / "cluster.py").read_text(encoding="utf-8")
    copy = source + f'\n\nSOURCE_DIGEST = "{source_digest()}"\n'
    # Cython finds the .pxd that types the copy by the copy's module name, which it reads from
    # the packages (folders with an __init__.py) the copy sits in: without them the .pxd was
    # silently left out, and the build was untyped Python compiled as is.
    for path, text in (
        (out.parent / "__init__.py", ""),
        (out / "__init__.py", ""),
        (out / "_ccluster.py", copy),
        (out / "_ccluster.pxd", (DEDUP / "cluster.pxd").read_text(encoding="utf-8")),
    ):
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
    ext = Extension("aggregator.dedup._ccluster", [str((out / "_ccluster.py").relative_to(HERE))])
    built = cythonize(
        [ext],
        include_path=[str(root)],
        language_level=3,
        compiler_directives={"annotation_typing": False},  # the types are in cluster.pxd
        quiet=True,
    )
    for e in built:  # (cythonize does not carry this over from the template)
        e.optional = True  # a failed C build leaves the pure module, it does not fail the install
    return built


setup(ext_modules=compiled_extensions())
