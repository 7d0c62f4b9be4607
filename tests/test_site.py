"""The built book (``_build/html``) as a reader gets it: first its links and assets on disk, then what
headless Chromium shows with the network cut off.

`make test` builds the book and then runs this file; run by hand it needs `make book` first. The browser
half needs a Chromium (Debian: ``apt-get install chromium``; or ``CHROMIUM=/path/to/chrome``): without
one it is skipped with a message, except under CI (``CI`` set), where `.ci/run` installs it and a missing
browser fails.
"""

import json
import os
import re
from collections import defaultdict
from functools import cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from bs4 import BeautifulSoup

from book_browser import (
    CHINESE,
    DESKTOP,
    HTML,
    PHONE,
    ROOT,
    book_pages,
    find_chromium,
    is_page,
    new_context,
    offline_browser,
    open_page,
)

if not (HTML / "index.html").is_file():
    pytest.skip("no built book in _build/html: run `make book` first (`make test` does)",
                allow_module_level=True)

ALL_PAGES = sorted(p for p in HTML.rglob("*.html") if is_page(p))  # both editions
PAGES = book_pages()  # ALL_PAGES less the index.html of each edition, which only redirects
ZH_TOC = ROOT / "_toc.zh.yml"  # the Chinese edition (_build/html/zh), when there is one
EXTERNAL_LINKS = ROOT / "_build" / "external-links.txt"
EXTERNAL_SCHEMES = ("http", "https", "mailto")
ASSET_RELS = {"stylesheet", "preload", "modulepreload", "prefetch", "icon", "shortcut", "manifest"}


def _name(path: Path) -> str:
    return path.relative_to(HTML).as_posix()


def _chinese(page: Path) -> bool:
    return page.relative_to(HTML).parts[0] == CHINESE


def _edition_root(page: Path) -> Path:
    return HTML / CHINESE if _chinese(page) else HTML


def _toc_entries(page: Path) -> list:
    toc = ZH_TOC if _chinese(page) else ROOT / "_toc.yml"
    return re.findall(r"(?:root|file):\s*(\S+)", toc.read_text(encoding="utf-8"))


def _notebook(page: Path) -> Path | None:
    """The notebook a page was built from, or None for a Markdown page or a generated one."""
    source = ROOT / page.relative_to(_edition_root(page)).with_suffix(".ipynb")
    return source if source.is_file() else None


# --- links and assets on disk ---------------------------------------------------------------------------

@cache
def _soup(path: Path) -> BeautifulSoup:
    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


@cache
def _anchors(path: Path) -> frozenset:
    soup = _soup(path)
    return frozenset([tag["id"] for tag in soup.find_all(id=True)]
                     + [tag["name"] for tag in soup.find_all("a", attrs={"name": True})])


def _references(soup: BeautifulSoup):
    """``(what, url, asset)`` for every link, image, script, stylesheet and redirect of a page; ``asset`` is
    whether the browser loads it to show the page (an image) rather than the reader following it (a link)."""
    for tag in soup.find_all("a", href=True):
        yield "link", tag["href"], False
    for tag in soup.find_all("link", href=True):
        rel = set(tag.get("rel", []))
        yield f"<link rel={' '.join(sorted(rel))}>", tag["href"], bool(rel & ASSET_RELS)
    for tag in soup.find_all(["img", "script", "source", "iframe", "video", "audio", "embed"], src=True):
        yield f"<{tag.name}>", tag["src"], True
    for tag in soup.find_all("meta", attrs={"http-equiv": re.compile("^refresh$", re.I)}):
        match = re.search(r"url=(\S+)", tag.get("content", ""), re.I)
        if match:
            yield "redirect", match.group(1).strip("'\""), False


def _check_page(page: Path):
    """``(problems, external)``: what does not resolve in ``_build/html``, and the external links."""
    problems, external = [], []
    soup = _soup(page)
    for what, url, asset in _references(soup):
        parts = urlsplit(url)
        if parts.scheme in EXTERNAL_SCHEMES:
            if asset:
                problems.append(f"{what} {url} needs the network")
            else:
                external.append(url)  # a link the reader may follow: listed, never fetched
            continue
        if parts.scheme == "data":
            continue
        if parts.scheme or parts.netloc:
            problems.append(f"{what} {url}: unexpected address")
            continue
        target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
        if not target.is_relative_to(HTML.resolve()):
            problems.append(f"{what} {url} points outside _build/html")
            continue
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            problems.append(f"{what} {url}: no such file")
        elif parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in _anchors(target):
            problems.append(f"{what} {url}: no #{unquote(parts.fragment)} in {_name(target)}")
    # Sphinx and MyST write a cross-reference or citation they could not resolve as an .xref without a link.
    for tag in soup.select(".xref"):
        if tag.find_parent("a") is None:
            problems.append(f"unresolved reference {tag.get_text(strip=True)!r} ({' '.join(tag['class'])})")
    # sphinxcontrib-bibtex writes a citation whose key is not in references.bib as an empty "[]".
    for tag in soup.select("span.bibtex-citation"):
        if tag.find("a", href=True) is None:
            problems.append(f"unresolved citation {tag.get_text(strip=True)!r}")
    return problems, external


def test_the_book_has_its_pages():
    names = {_name(page) for page in ALL_PAGES}
    toc = re.findall(r"(?:root|file):\s*(\S+)", (ROOT / "_toc.yml").read_text(encoding="utf-8"))
    assert {"index.html", "search.html", "genindex.html"} <= names
    assert {f"{entry}.html" for entry in toc} <= names, "a page of _toc.yml was not built"


@pytest.mark.skipif(not ZH_TOC.is_file(), reason="no _toc.zh.yml: nothing translated yet, no Chinese book")
def test_the_chinese_book_has_its_pages_in_chinese_with_chinese_search():
    names = {_name(page) for page in ALL_PAGES}
    toc = re.findall(r"(?:root|file):\s*(\S+)", ZH_TOC.read_text(encoding="utf-8"))
    expected = {"zh/index.html", "zh/search.html", "zh/genindex.html"}
    assert expected <= names, "no Chinese book in _build/html/zh/"
    assert {f"zh/{entry}.html" for entry in toc} <= names, "a page of _toc.zh.yml was not built"
    for page in PAGES:
        lang = _soup(page).html.get("lang")
        assert lang == ("zh-CN" if _chinese(page) else "en"), f"{_name(page)}: <html lang={lang!r}>"
    # Sphinx splits Chinese into words for the search index only with jieba (the dev extra): without it
    # the index holds Latin words only.
    index = (HTML / CHINESE / "searchindex.js").read_text(encoding="utf-8")
    terms = json.loads(index[index.index("(") + 1:index.rindex(")")])["terms"]
    chinese_words = [term for term in terms if re.fullmatch(r"[\u4e00-\u9fff]{2,}", term)]
    assert len(chinese_words) > 10, "the Chinese search index has no Chinese words: is jieba installed?"


def _counterpart(page: Path) -> Path | None:
    """The page of the other edition that ``page``'s "English | 中文" switch must link to."""
    relative = page.relative_to(_edition_root(page)).as_posix()
    if _chinese(page):
        return HTML / relative.replace("book/zh/", "book/").replace(".zh.html", ".html")
    if relative.startswith("notebooks/"):
        chinese = relative.removesuffix(".html") + ".zh.html"
    else:
        chinese = relative.replace("book/", "book/zh/", 1)
    target = HTML / CHINESE / chinese
    toc = re.findall(r"(?:root|file):\s*(\S+)", ZH_TOC.read_text(encoding="utf-8"))
    return target if target.is_file() else HTML / CHINESE / f"{toc[0]}.html"


SWITCHED = [page for page in PAGES if page.name not in ("search.html", "genindex.html")]


@pytest.mark.skipif(not ZH_TOC.is_file(), reason="no _toc.zh.yml: nothing translated yet, no Chinese book")
@pytest.mark.parametrize("page", SWITCHED, ids=_name)
def test_every_page_links_its_counterpart_in_the_other_edition(page):
    switch = _soup(page).select_one("p.edition-switch")
    assert switch is not None, "no English | 中文 switch on the page"
    links = switch.find_all("a", href=True)
    assert len(links) == 1, f"the switch must link the other edition once: {switch}"
    target = (page.parent / links[0]["href"]).resolve()
    assert target == _counterpart(page).resolve(), \
        f"the switch links {links[0]['href']}, not {_name(_counterpart(page))}"


@pytest.mark.parametrize("page", ALL_PAGES, ids=_name)
def test_every_link_anchor_image_and_script_resolves(page):
    problems, _ = _check_page(page)
    assert not problems, f"{_name(page)}:\n  " + "\n  ".join(problems)


def test_external_links_are_listed():
    """External links are not fetched (CI has no network): they go to _build/external-links.txt to review."""
    pages_of = defaultdict(set)
    for page in ALL_PAGES:
        for url in _check_page(page)[1]:
            pages_of[url].add(_name(page))
    lines = [f"{url}\t{' '.join(sorted(pages))}\n" for url, pages in sorted(pages_of.items())]
    EXTERNAL_LINKS.write_text("".join(lines), encoding="utf-8")
    assert pages_of, "no external link found: the check did not see the repository links"


# --- what a reader sees in Chromium ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def chromium():
    path = find_chromium()
    if path is None:
        missing = ("no Chromium found (looked for $CHROMIUM, chromium, chromium-browser, google-chrome); "
                   "install one (Debian: `apt-get install chromium`) to check the book as a reader sees it")
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test, but {missing}; .ci/install-chromium installs it")
        pytest.skip(f"BROWSER TEST SKIPPED: {missing}")
    return path


# Runs in a loaded page after MathJax: what a reader would see go wrong. Details and dropdowns are opened
# first, so that code and maths inside them are measured too.
INSPECT = r"""() => {
    const text = e => (e.textContent || '').trim().replace(/\s+/g, ' ').slice(0, 100);
    const visible = e => !!e && e.getClientRects().length > 0 && getComputedStyle(e).visibility !== 'hidden';
    const found = {};
    found.broken_images = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0))
        .map(i => i.getAttribute('src'));
    found.output_images = document.querySelectorAll('div.cell_output img').length;
    found.figures_as_text = [...document.querySelectorAll('div.cell_output pre')].map(text)
        .filter(t => /^<Figure size .* Axes>$/.test(t));

    // Maths: every math element typeset, no TeX error, no delimiter left in the text.
    found.untypeset_math = [...document.querySelectorAll('.math')]
        .filter(e => !e.querySelector('mjx-container')).map(text);
    found.math_errors = [];
    if (window.MathJax && MathJax.startup && MathJax.startup.document) {
        for (const item of MathJax.startup.document.math) {
            const mml = MathJax.startup.toMML(item.root);  // an undefined macro is red mtext, not merror
            if (/<merror|mathcolor="red"/.test(mml)) found.math_errors.push(item.math.slice(0, 100));
        }
    }
    found.raw_tex = [];
    const article = document.querySelector('article') || document.body;
    const walker = document.createTreeWalker(article, NodeFilter.SHOW_TEXT, {acceptNode: node =>
        node.parentElement.closest('pre, code, script, style, textarea, mjx-container')
            ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
    while (walker.nextNode()) {
        const value = walker.currentNode.nodeValue;
        if (['\\(', '\\)', '\\[', '\\]', '$$'].some(d => value.includes(d)))
            found.raw_tex.push(value.trim().slice(0, 100));
    }

    // The reader's tools.
    found.toc_links = [...document.querySelectorAll('nav.bd-docs-nav a.reference')].filter(visible).length;
    const launch = document.querySelector('.dropdown-launch-buttons');
    found.launch_button = visible(launch && launch.querySelector('button'));
    found.colab_links = launch ? [...launch.querySelectorAll('a')].map(a => a.href)
        .filter(h => h.startsWith('https://colab.research.google.com/')) : [];

    // Code wider than its page: open every details and dropdown, then measure each code block.
    document.querySelectorAll('details').forEach(d => d.open = true);
    document.querySelectorAll('.toggle-button-hidden').forEach(b => b.click());
    found.wide_code = [...document.querySelectorAll('div.highlight pre')]
        .filter(pre => !pre.closest('div.cell_output') && pre.scrollWidth > pre.clientWidth + 1)
        .map(pre => {
            const lines = pre.textContent.split('\n');
            const longest = lines.reduce((a, b) => b.length > a.length ? b : a, '');
            return `${longest.length} characters: ${longest.trim().slice(0, 60)}...`;
        });

    // The page as a whole fits the window (code blocks may scroll inside themselves).
    // A font with Chinese glyphs (fonts-noto-cjk on Debian): without one, every character is the same
    // empty box, so two different characters draw the same pixels.
    const draw = ch => {
        const canvas = document.createElement('canvas');
        canvas.width = canvas.height = 32;
        const context = canvas.getContext('2d');
        context.font = `24px ${getComputedStyle(document.body).fontFamily}`;
        context.fillText(ch, 2, 26);
        return context.getImageData(0, 0, 32, 32).data.join(',');
    };
    found.cjk_font = draw('中') !== draw('文');

    found.page_width = document.documentElement.scrollWidth;
    found.window_width = window.innerWidth;
    found.article_right = Math.round(article.getBoundingClientRect().right);
    return found;
}"""

# Whether the page shows, inside the window, an element that matches the selector.
SHOWN = """selector => [...document.querySelectorAll(selector)].some(e => {
    const box = e.getBoundingClientRect();
    return box.width > 0 && box.height > 0 && box.right > 0 && box.left < window.innerWidth
        && getComputedStyle(e).visibility !== 'hidden';
})"""
TOC_LINK, SEARCH_FIELD = "nav.bd-docs-nav a.reference", "input[name=q]"


def _click_shows(page, button: str, target: str) -> bool:
    """Clicks the first visible ``button`` as a reader would; True if ``target`` shows within 2 s."""
    buttons = page.locator(f"{button} >> visible=true")
    if buttons.count() == 0:
        return False
    from playwright.sync_api import TimeoutError as NotShown

    buttons.first.click()
    try:
        page.wait_for_function(SHOWN, arg=target, timeout=2000)
        return True
    except NotShown:
        return False


@pytest.fixture(scope="module")
def seen(chromium):
    """``{(page name, "desktop" | "phone"): findings}`` for every page, with the console's errors."""
    results = {}
    with offline_browser(chromium) as (browser, offline):
        for width, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            context = new_context(browser, offline, viewport)
            page = context.new_page()
            errors = []
            page.on("console", lambda message: message.type == "error" and errors.append(message.text))
            page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
            page.on("requestfailed",
                    lambda request: errors.append(f"not loaded: {request.url} ({request.failure})"))
            for path in PAGES:
                errors.clear()
                open_page(page, path)
                found = page.evaluate(INSPECT)
                found["toc_shown"] = page.evaluate(SHOWN, TOC_LINK)
                if width == "phone" and not found["toc_shown"]:  # behind the menu button
                    found["menu_shows_toc"] = _click_shows(page, ".primary-toggle", TOC_LINK)
                    page.keyboard.press("Escape")
                found["search_shown"] = page.evaluate(SHOWN, SEARCH_FIELD) or _click_shows(
                    page, ".search-button-field, .search-button", SEARCH_FIELD)
                found["errors"] = list(errors)
                results[_name(path), width] = found
            context.close()
    return results


def _image_outputs(notebook: Path) -> int:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return sum(any(key.startswith("image/") for key in output.get("data", {}))
               for cell in cells for output in cell.get("outputs", []))


BROWSER_CASES = [pytest.param(page, width, id=f"{_name(page)}-{width}") for width in ("desktop", "phone")
                 for page in PAGES]


@pytest.mark.parametrize(("page", "width"), BROWSER_CASES)
def test_page_loads_offline_without_errors(seen, page, width):
    errors = seen[_name(page), width]["errors"]
    assert not errors, \
        "JavaScript errors or resources not loaded (the network is cut off):\n  " + "\n  ".join(errors)


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_every_image_loads(seen, page):
    found = seen[_name(page), "desktop"]
    assert not found["broken_images"], f"images that did not load: {found['broken_images']}"
    assert not found["figures_as_text"], \
        f"figures shown as text, without their image: {found['figures_as_text']}"
    notebook = _notebook(page)
    if notebook is not None:
        expected = _image_outputs(notebook)
        assert found["output_images"] == expected, \
            f"{notebook.name} has {expected} image outputs, the page shows {found['output_images']}"


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_the_mathematics_is_typeset(seen, page):
    found = seen[_name(page), "desktop"]
    assert not found["untypeset_math"], f"maths MathJax did not typeset: {found['untypeset_math']}"
    assert not found["math_errors"], f"TeX that MathJax could not read: {found['math_errors']}"
    assert not found["raw_tex"], f"raw TeX delimiters in the text: {found['raw_tex']}"


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_toc_search_and_colab_button_are_there(seen, page):
    found = seen[_name(page), "desktop"]
    toc = _toc_entries(page)
    assert found["toc_links"] >= len(toc), \
        f"the table of contents shows {found['toc_links']} of {len(toc)} pages"
    assert found["toc_shown"], "the table of contents is not on the page"
    assert found["search_shown"], "no search field, nor a search button that opens one"
    notebook = _notebook(page)
    if notebook is not None:
        assert found["launch_button"], "no visible launch button"
        assert any(link.endswith(f"/notebooks/{notebook.name}") for link in found["colab_links"]), \
            f"the launch button has no Colab link to {notebook.name}: {found['colab_links']}"


@pytest.mark.parametrize("page", [page for page in PAGES if _chinese(page)], ids=_name)
def test_chinese_pages_have_a_font_with_chinese_glyphs(seen, page):
    assert seen[_name(page), "desktop"]["cjk_font"], \
        "Chromium draws Chinese as empty boxes: install a CJK font (.ci/install-chromium: fonts-noto-cjk)"


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_no_code_cell_is_wider_than_its_page(seen, page):
    """At 1280 px, 88 characters fit (tests/test_project.py limits notebook code lines to that)."""
    found = seen[_name(page), "desktop"]
    assert not found["wide_code"], \
        f"{len(found['wide_code'])} code blocks scroll sideways at {DESKTOP['width']} px:\n  " \
        + "\n  ".join(found["wide_code"])


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_page_is_usable_at_a_phones_width(seen, page):
    found = seen[_name(page), "phone"]
    assert found["page_width"] <= found["window_width"], \
        f"the page is {found['page_width']} px wide in a {found['window_width']} px window"
    assert found["article_right"] <= found["window_width"], "the text runs past the window's right edge"
    assert found["toc_shown"] or found["menu_shows_toc"], "no button opens the table of contents"
    assert found["search_shown"], "no search field, nor a search button that opens one"
