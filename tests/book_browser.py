"""Open the built book (``_build/html``) in headless Chromium with the network cut off.

Shared by ``tests/test_site.py`` (what a reader sees on every page) and the screenshots command:

    python tests/book_browser.py [--out _build/screenshots]   # or: make screenshots

Playwright drives the system's Chromium (Debian's ``chromium`` package, or the path in ``$CHROMIUM``), so
nothing downloads a browser. Every request that is not a ``file://`` URL is aborted and recorded: a page
that needs the network to show itself fails the test.
"""

import argparse
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
DESKTOP = {"width": 1280, "height": 800}  # Playwright's default width: the "default width" of the tests
PHONE = {"width": 400, "height": 800}
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
NOT_PAGES = ("_static", "_sources", "_images")  # folders of the build that hold assets, not pages
CHINESE = "zh"  # the Chinese edition's folder in the build (_build/html/zh, from _config.zh.yml)


def is_page(path: Path, html: Path = HTML) -> bool:
    """Whether ``path`` in the build is a page of either edition (not an asset of one)."""
    parts = path.relative_to(html).parts
    if parts[0] == CHINESE and len(parts) > 1:
        parts = parts[1:]
    return path.suffix == ".html" and parts[0] not in NOT_PAGES


def book_pages(html: Path = HTML) -> list[Path]:
    """Every HTML page of the built book, both editions, search and index pages included; not the
    ``index.html`` of either, which only redirect."""
    return sorted(p for p in html.rglob("*.html")
                  if is_page(p, html) and p not in (html / "index.html", html / CHINESE / "index.html"))


def find_chromium() -> str | None:
    """The Chromium to drive: ``$CHROMIUM`` if set, else the first of CHROMIUM_NAMES on the PATH."""
    if os.environ.get("CHROMIUM"):
        return shutil.which(os.environ["CHROMIUM"])  # None where that is no executable file
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


class Offline:
    """Aborts every request that is not a file on disk, and keeps the list of what was blocked."""

    def __init__(self):
        self.blocked: list[str] = []

    def __call__(self, route):
        url = route.request.url
        if url.startswith(("file://", "data:", "blob:")):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort()


@contextmanager
def offline_browser(chromium: str):
    """``(browser, offline)``: Chromium started headless; give each new context ``offline`` as its router."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        try:
            yield browser, Offline()
        finally:
            browser.close()


def new_context(browser, offline: Offline, viewport: dict):
    context = browser.new_context(viewport=viewport, service_workers="block")
    context.route("**/*", offline)
    return context


# Runs in the page once it has loaded: waits for MathJax's typesetting and for every image.
SETTLE = """async () => {
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
    await Promise.all([...document.images].map(img => img.decode().catch(() => null)));
    await document.fonts.ready;
}"""


def open_page(page, path: Path):
    page.goto(path.resolve().as_uri(), wait_until="load")
    page.evaluate(SETTLE)


def take_screenshots(out: Path, chromium: str, html: Path = HTML) -> list[Path]:
    """A full-page PNG of every page at the desktop width, and one at a phone's width."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with offline_browser(chromium) as (browser, offline):
        for suffix, viewport in (("", DESKTOP), ("-phone", PHONE)):
            context = new_context(browser, offline, viewport)
            page = context.new_page()
            for path in book_pages(html):
                open_page(page, path)
                name = path.relative_to(html).with_suffix("").as_posix().replace("/", "--")
                target = out / f"{name}{suffix}.png"
                page.screenshot(path=target, full_page=True)
                written.append(target)
            context.close()
    if offline.blocked:
        print(f"blocked {len(offline.blocked)} network requests:", *sorted(set(offline.blocked)), sep="\n  ")
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description="Full-page screenshots of every page of the built book.")
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "screenshots",
                        help="folder for the PNG files (default: _build/screenshots)")
    parser.add_argument("--html", type=Path, default=HTML, help="the built book (default: _build/html)")
    args = parser.parse_args(argv)
    if not (args.html / "index.html").is_file():
        parser.error(f"--html: no built book in {args.html}; run `make book` first")
    chromium = find_chromium()
    if chromium is None:
        parser.error("no Chromium found: install it (Debian: apt-get install chromium) or set CHROMIUM=path")
    written = take_screenshots(args.out, chromium, args.html)
    print(f"wrote {len(written)} screenshots to {args.out}")


if __name__ == "__main__":
    sys.exit(main())
