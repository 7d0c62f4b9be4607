"""Two small fixes that make the built pages complete offline and quiet in the browser's console.

1. The notebooks' "Open in Colab" badge. Each notebook's first cell links Colab's badge image by its web
   address, which GitHub, Jupyter and Colab show as it is. In the built pages that address would need the
   network, so a transform points the image at the committed copy ``_static/colab-badge.svg``. The link
   around it is left unchanged.
2. Inline scripts written twice. Sphinx 7.4 lists an inline script that an extension adds while reading
   once under the filename ``None`` and once under ``""``; sphinx-thebe's ``const THEBE_JS_URL = ...``
   then throws "Identifier 'THEBE_JS_URL' has already been declared" on every page. Each page keeps the
   first copy of each script.

tests/test_site.py checks both in headless Chromium.
"""

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


def setup(app):
    app.add_transform(LocalColabBadge)
    app.connect("html-page-context", drop_repeated_scripts, priority=900)  # after the others add theirs
    return {"parallel_read_safe": True, "parallel_write_safe": True}
