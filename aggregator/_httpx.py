"""httpx, imported without its command-line client.

httpx's package imports ``httpx._main`` (its CLI) whenever click, rich and pygments are
installed, as they are with this project: ~50 ms of every ``aggregator update``'s start (its
imports took 0.19 s instead of 0.24 s here). The rounds never use that client. httpx expects the
import to fail when those packages are missing, and then defines a stub ``httpx.main``; that is
what happens here. The block is lifted right after, so that a later ``import httpx._main`` in
the same process works as usual."""

from __future__ import annotations

import sys

_blocked = "httpx" not in sys.modules and "httpx._main" not in sys.modules
if _blocked:
    sys.modules["httpx._main"] = None  # (an import of a module mapped to None fails)
try:
    import httpx
finally:
    if _blocked:
        del sys.modules["httpx._main"]

__all__ = ["httpx"]
