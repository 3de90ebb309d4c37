"""Builds the optional compiled clusterer; everything else about the project is in pyproject.toml.

``aggregator/dedup/cluster.py`` is the clusterer's only source, and ``dedup/text.py`` the only
source of the features it reads from an entry. When Cython is there (it is in
[build-system].requires, so a normal ``pip install`` has it), this compiles a copy of each, with
the C types of its ``.pxd``, as the extension modules ``aggregator.dedup._ccluster`` and
``aggregator.dedup._ctext``: the same stories, faster (tests/test_compiled.py). Each copy carries
the digest of the two files it was built from, and the module uses it only while those files are
unchanged, so an edited source is never shadowed by an old build.

Where they cannot be built (no C compiler, or AGGREGATOR_PURE_PYTHON=1 at install time), the
install goes on without them and the pure modules run.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).resolve().parent
DEDUP = HERE / "aggregator" / "dedup"
# compiled module: the source it is a copy of (the .pxd of the same name types it)
BUILDS = {"_ccluster": "cluster", "_ctext": "text"}


def source_digest(stem: str) -> str:
    """Same as dedup.base.source_digest: the bytes of the .py, then of the .pxd."""
    h = hashlib.blake2b(digest_size=16)
    for name in (f"{stem}.py", f"{stem}.pxd"):
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
    # Cython finds the .pxd that types a copy by the copy's module name, which it reads from
    # the packages (folders with an __init__.py) the copy sits in: without them the .pxd was
    # silently left out, and the build was untyped Python compiled as is.
    files = [(out.parent / "__init__.py", ""), (out / "__init__.py", "")]
    exts = []
    for module, stem in BUILDS.items():
        source = (DEDUP / f"{stem}.py").read_text(encoding="utf-8")
        files.append(
            (out / f"{module}.py", source + f'\n\nSOURCE_DIGEST = "{source_digest(stem)}"\n')
        )
        files.append((out / f"{module}.pxd", (DEDUP / f"{stem}.pxd").read_text(encoding="utf-8")))
        path = (out / f"{module}.py").relative_to(HERE)
        exts.append(Extension(f"aggregator.dedup.{module}", [str(path)]))
    for path, text in files:
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
    built = cythonize(
        exts,
        include_path=[str(root)],
        language_level=3,
        compiler_directives={"annotation_typing": False},  # the types are in the .pxd files
        quiet=True,
    )
    for e in built:  # (cythonize does not carry this over from the template)
        e.optional = True  # a failed C build leaves the pure module, it does not fail the install
    return built


setup(ext_modules=compiled_extensions())
