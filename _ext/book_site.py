"""Two small fixes that make the built pages complete offline and quiet in the browser's console.

1. The notebooks' "Open in Colab" badge. Each notebook's first cell links Colab's badge image by its web
   address, which GitHub, Jupyter and Colab show as it is. In the built pages that address would need the
   network, so a transform points the image at the committed copy ``_static/colab-badge.svg``. The link
   around it is left unchanged.
2. Inline scripts written twice. Sphinx 7.4 lists an inline script that an extension adds while reading
   once under the filename ``None`` and once under ``""``; sphinx-thebe's ``const THEBE_JS_URL = ...``
   then throws "Identifier 'THEBE_JS_URL' has already been declared" on every page. Each page keeps the
   first copy of each script.

3. The edition switch. The English book (``_build/html``) and the Chinese one (``_build/html/zh``, built
   with ``_config.zh.yml`` and ``_toc.zh.yml``) link each page to its counterpart: an "English | 中文" line
   at the top of every page, the current edition in plain text. ``notebooks/X`` pairs with
   ``notebooks/X.zh``, ``book/P`` with ``book/zh/P``; an English page not yet translated links to the
   Chinese root page, and without a ``_toc.zh.yml`` (no Chinese book) the English pages have no switch.

tests/test_site.py checks all three in headless Chromium.
"""

import re
from pathlib import Path

from docutils import nodes
from sphinx.transforms import SphinxTransform

REMOTE_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
LOCAL_BADGE = "/_static/colab-badge.svg"  # a leading "/" is the book's source root for Sphinx


class LocalColabBadge(SphinxTransform):
    default_priority = 400  # during reading, before Sphinx collects and copies the images

    def apply(self, **kwargs):
        for image in self.document.findall(nodes.image):
            if image.get("uri") == REMOTE_BADGE:
                image["uri"] = LOCAL_BADGE


def drop_repeated_scripts(app, pagename, templatename, context, doctree):
    scripts, seen = [], set()
    for script in context.get("script_files", []):
        key = (script.filename or "", tuple(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            scripts.append(script)
    context["script_files"] = scripts


def _toc_entries(path: Path) -> list[str]:
    if not path.is_file():
        return []
    return re.findall(r"(?:root|file):\s*(\S+)", path.read_text(encoding="utf-8"))


def chinese_edition(app) -> bool:
    return (app.config.language or "").startswith("zh")


def counterpart(app, pagename: str) -> str | None:
    """The docname of ``pagename``'s page in the other edition, relative to that edition's root."""
    srcdir = Path(app.srcdir)
    if chinese_edition(app):
        if pagename.startswith("book/zh/"):
            return "book/" + pagename.removeprefix("book/zh/")
        return pagename.removesuffix(".zh")
    chinese = _toc_entries(srcdir / "_toc.zh.yml")
    if not chinese:
        return None
    if pagename.startswith("notebooks/"):
        candidate = pagename + ".zh"
    elif pagename.startswith("book/"):
        candidate = "book/zh/" + pagename.removeprefix("book/")
    else:  # search, genindex: the same page of the other build
        return pagename
    return candidate if candidate in chinese else chinese[0]  # not translated yet: the Chinese root


def edition_switch(app, pagename, templatename, context, doctree):
    other = counterpart(app, pagename)
    if other is None or "body" not in context:
        return
    up = "../" * pagename.count("/")
    href = f"{up}../{other}.html" if chinese_edition(app) else f"{up}zh/{other}.html"
    if chinese_edition(app):
        english, chinese = f'<a href="{href}" hreflang="en" lang="en">English</a>', "<span>中文</span>"
    else:
        english, chinese = '<span lang="en">English</span>', f'<a href="{href}" hreflang="zh-CN">中文</a>'
    switch = (f'<p class="edition-switch" style="text-align: right; margin: 0 0 0.5em">{english}'
              f' | <span lang="zh-CN">{chinese}</span></p>\n')
    context["body"] = switch + context["body"]


def setup(app):
    app.add_transform(LocalColabBadge)
    app.connect("html-page-context", edition_switch)
    app.connect("html-page-context", drop_repeated_scripts, priority=900)  # after the others add theirs
    return {"parallel_read_safe": True, "parallel_write_safe": True}
