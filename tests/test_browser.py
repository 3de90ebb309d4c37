"""The web app in headless Chromium (Debian's chromium, driven by Playwright): load the story
list, filter, search, open a story, check its sources; screenshots in test-artifacts/."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aggregator.config import Settings
from aggregator.demo import run_demo

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REQUIRED = os.environ.get("AGGREGATOR_REQUIRE_BROWSER") == "1"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover
    sync_playwright = None

if not REQUIRED and (CHROMIUM is None or sync_playwright is None):
    pytest.skip(
        "browser tests need Debian's chromium and playwright (set AGGREGATOR_REQUIRE_BROWSER=1 "
        "to make them required)",
        allow_module_level=True,
    )

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    assert CHROMIUM, "chromium is not installed (apt-get install chromium)"
    db = tmp_path_factory.mktemp("browser") / "demo.sqlite"
    run_demo(Settings(), db, io.StringIO())
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "--db", str(db), "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


def test_story_list_filter_search_and_story_page(site):
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(site + "/")
        assert page.locator("tr.story").count() == 11
        page.fill("input[name=min_sources]", "3")
        page.click("button[type=submit]")
        page.wait_for_url("**min_sources=3**")
        assert page.locator("tr.story").count() == 4
        page.screenshot(path=str(ARTIFACTS / "stories-min3.png"), full_page=True)
        page.fill("input[name=q]", "Rotterdam")
        page.click("button[type=submit]")
        page.wait_for_url("**q=Rotterdam**")
        assert page.locator("tr.story").count() == 1
        assert page.locator("tr.story mark").first.inner_text().lower() == "rotterdam"
        page.click("tr.story a")
        page.wait_for_url("**/story/**")
        sources = page.locator("tr.source")
        assert sources.count() == 4
        outlets = {sources.nth(i).locator("td").nth(1).inner_text() for i in range(4)}
        assert outlets == {"The Daily Planet", "Metro Courier", "Northern Herald", "Harbour Times"}
        assert "4 sources" in page.inner_text("body")
        page.screenshot(path=str(ARTIFACTS / "story-page.png"), full_page=True)
        browser.close()
    assert (ARTIFACTS / "story-page.png").stat().st_size > 10_000
