"""Project-level checks: the book's files agree with each other.

Fast and offline: they read files and never execute a notebook (`pytest --nbval notebooks` does that).
"""

import json
import math
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
# The English notebooks; the Chinese ones (*.zh.ipynb) are checked by tests/test_zh_edition.py.
NOTEBOOKS = sorted(p for p in (ROOT / "notebooks").glob("*.ipynb") if not p.name.endswith(".zh.ipynb"))
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
REPOSITORY_URL = CONFIG["repository"]["url"].rstrip("/")
BRANCH = CONFIG["repository"]["branch"]
OWNER_REPO = re.fullmatch(r"https://github\.com/([^/]+/[^/]+)", REPOSITORY_URL).group(1)
IGNORE_MARKERS = ("NBVAL_IGNORE_OUTPUT", "NBVAL_SKIP")  # as comments in a cell, or as tags below
IGNORE_TAGS = ("nbval-ignore-output", "nbval-skip")
GUARD = 'if not os.path.isfile("../shufflenet/__init__.py")'  # the setup cell: no clone around the notebook


def _requirement_key(requirement: str):
    """``"name>=1.0,<2"`` -> ``("name", {">=1.0", "<2"})``, names normalised as pip does (PEP 503)."""
    match = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*?)\s*", requirement)
    assert match, f"cannot parse requirement {requirement!r}"
    name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
    specifiers = frozenset(s.replace(" ", "") for s in match.group(2).split(",") if s.strip())
    return name, specifiers


def _toc_files(node):
    """Every ``file:`` entry of ``_toc.yml``, the root included, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("file", "root"):
                yield value
            else:
                yield from _toc_files(value)
    elif isinstance(node, list):
        for item in node:
            yield from _toc_files(item)


TOC_FILES = list(_toc_files(TOC))


def _cells(path: Path, cell_type: str):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return [cell for cell in cells if cell["cell_type"] == cell_type]


def _source(cell) -> str:
    source = cell["source"]
    return source if isinstance(source, str) else "".join(source)


# --- environment.yml mirrors pyproject.toml ------------------------------------------------------------

def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10 has no TOML reader in the standard library
        pytest.skip("reading pyproject.toml needs tomllib (Python 3.11+)")

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["dev"]
    environment = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))

    assert environment["name"] == "shufflenet-book"
    conda_entries = [d for d in environment["dependencies"] if isinstance(d, str)]
    assert "pip" in conda_entries
    python = [d for d in conda_entries if d.startswith("python")]
    assert python == [f"python{project['requires-python']}"], "conda's python must match requires-python"

    pip_sections = [d["pip"] for d in environment["dependencies"] if isinstance(d, dict)]
    assert len(pip_sections) == 1, "environment.yml needs exactly one pip section"
    pip_entries = pip_sections[0]
    assert "-e .[dev]" in pip_entries, "the pip section must install the package itself with -e .[dev]"
    listed = [entry for entry in pip_entries if not entry.startswith("-")]
    assert sorted(map(_requirement_key, listed)) == sorted(map(_requirement_key, declared))


# --- the table of contents ------------------------------------------------------------------------------

@pytest.mark.parametrize("entry", TOC_FILES)
def test_every_toc_entry_exists(entry):
    candidates = [ROOT / f"{entry}{suffix}" for suffix in (".md", ".ipynb")]
    assert any(path.is_file() for path in candidates), \
        f"_toc.yml lists {entry}, but neither .md nor .ipynb exists"


def test_toc_lists_each_file_once():
    assert len(TOC_FILES) == len(set(TOC_FILES))


def test_the_intro_links_every_chapter_in_toc_order():
    """The chapter map on the root page follows _toc.yml, so a new chapter cannot be forgotten there."""
    root = TOC["root"]
    intro = (ROOT / f"{root}.md").read_text(encoding="utf-8")
    base = (ROOT / root).parent
    linked = []
    for target in re.findall(r"\]\(([^)#\s]+\.(?:md|ipynb))\)", intro):
        entry = (base / target).resolve().relative_to(ROOT).with_suffix("").as_posix()
        if entry not in linked:
            linked.append(entry)
    chapters = [entry for entry in TOC_FILES if entry != root]
    assert [entry for entry in linked if entry in chapters] == chapters


# --- every notebook follows the conventions -------------------------------------------------------------

def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found in notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_in_the_toc(path):
    assert f"notebooks/{path.stem}" in TOC_FILES, f"{path.name} is missing from _toc.yml"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_starts_with_title_and_its_own_colab_badge(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    first = cells[0]
    assert first["cell_type"] == "markdown", "the first cell must be markdown: the title and the Colab badge"
    lines = [line for line in _source(first).splitlines() if line.strip()]
    assert re.fullmatch(r"# \S.*", lines[0]), f"the first line must be a '# Title', got {lines[0]!r}"
    badge_url = f"https://colab.research.google.com/github/{OWNER_REPO}/blob/{BRANCH}/notebooks/{path.name}"
    badge = f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({badge_url})"
    assert badge in lines, f"the first cell must contain the badge line {badge}"
    links = re.findall(r"https://colab\.research\.google\.com/github/\S+?\.ipynb", _source(first))
    assert links == [badge_url], f"the Colab link must point to this notebook: {links}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_installs_the_package_only_when_alone(path):
    code = [_source(cell) for cell in _cells(path, "code")]
    installing = [source for source in code if "pip" in source and "install" in source]
    assert len(installing) == 1, "exactly one code cell may install anything: the setup cell"
    setup = installing[0]
    assert setup == code[0], "the setup cell must be the first code cell"
    # The repository and branch are written once, and must be _config.yml's.
    assert f'REPOSITORY, BRANCH = "{REPOSITORY_URL}", "{BRANCH}"' in setup.splitlines()
    assert setup.count("https://") == 1, "the setup cell names the repository once, in REPOSITORY"
    # Everything that clones, installs or changes directory sits inside one guard: the notebook is
    # alone (no clone of the book around it) and in Colab, or without the package installed.
    lines = setup.splitlines()
    guard = [i for i, line in enumerate(lines) if line.startswith(GUARD)]
    assert len(guard) == 1, f"the setup cell needs one `{GUARD} ...:` guard"
    end = next(i for i in range(guard[0], len(lines)) if lines[i].rstrip().endswith(":"))
    condition = " ".join(lines[guard[0]:end + 1])
    for part in ('"google.colab" in sys.modules', 'importlib.util.find_spec("shufflenet") is None'):
        assert part in condition, f"the guard must test {part}"
    body = lines[guard[0] + 1:]
    assert all(not line.strip() or line.startswith((" ", "\t")) for line in body), \
        "nothing may follow the guard's block in the setup cell"
    for word in ("run_or_stop([", "os.chdir("):
        calls = [i for i, line in enumerate(lines) if word in line]
        assert calls and all(i > end for i in calls), f"{word} outside the guard"


def test_every_notebook_has_the_same_setup_cell():
    setups = {_source(_cells(path, "code")[0]) for path in NOTEBOOKS}
    assert len(setups) == 1, "the Colab setup cells differ between notebooks: keep one text"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_was_executed_top_to_bottom(path):
    counts = [cell["execution_count"] for cell in _cells(path, "code")]
    assert counts == list(range(1, len(counts) + 1)), \
        f"execution counts must be 1..N in order (run it in a fresh kernel): {counts}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_no_stored_errors(path):
    for index, cell in enumerate(_cells(path, "code"), start=1):
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", \
                f"code cell {index} stored an error: {output.get('ename')}"
            if output["output_type"] == "stream" and output["name"] == "stderr":
                assert "Traceback" not in "".join(output["text"]), f"code cell {index} printed a traceback"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_ignores_few_outputs(path):
    code = _cells(path, "code")
    ignored = [cell for cell in code
               if any(marker in _source(cell) for marker in IGNORE_MARKERS)
               or any(tag in cell.get("metadata", {}).get("tags", []) for tag in IGNORE_TAGS)]
    allowed = max(1, math.ceil(len(code) / 10))
    assert len(ignored) <= allowed, \
        f"{len(ignored)} of {len(code)} code cells skip nbval's comparison; at most {allowed} may"


# --- citations ------------------------------------------------------------------------------------------

def _bib_keys():
    text = (ROOT / "book" / "references.bib").read_text(encoding="utf-8")
    return set(re.findall(r"@\w+\s*\{\s*([^,\s]+)\s*,", text))


def _cited_keys():
    """``(file, key)`` for every {cite}, {cite:p}, {cite:t}... role in book/*.md and notebooks' markdown."""
    texts = [(p, p.read_text(encoding="utf-8")) for p in sorted((ROOT / "book").glob("*.md"))]
    texts += [(p, _source(cell)) for p in NOTEBOOKS for cell in _cells(p, "markdown")]
    found = []
    for path, text in texts:
        for keys in re.findall(r"\{cite(?::\w+)?\}`([^`]*)`", text):
            found += [(path.relative_to(ROOT).as_posix(), key.strip()) for key in keys.split(",")]
    return found


def test_the_bibliography_parses():
    keys = _bib_keys()
    assert "zhang2018shufflenet" in keys


def test_the_book_cites_the_paper():
    assert any(key == "zhang2018shufflenet" for _, key in _cited_keys())


def test_every_citation_is_in_the_bibliography():
    keys = _bib_keys()
    missing = [(path, key) for path, key in _cited_keys() if key not in keys]
    assert not missing, f"cited but not in book/references.bib: {missing}"


# --- code fits the page ---------------------------------------------------------------------------------

MAX_CODE_LINE = 88  # characters; at 1280 px a code cell shows about 90 (tests/test_site.py checks the pages)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_code_lines_fit_the_page(path):
    long = [f"code cell {index}: {len(line)} characters: {line.strip()[:50]}..."
            for index, cell in enumerate(_cells(path, "code"), start=1)
            for line in _source(cell).splitlines() if len(line) > MAX_CODE_LINE]
    assert not long, f"{len(long)} code lines longer than {MAX_CODE_LINE} characters:\n  " + "\n  ".join(long)
