"""The Chinese edition (中文版): generated from the English notebooks and pages and the translation files.

    python scripts/zh_edition.py build                 # write notebooks/*.zh.ipynb, book/zh/*.md, _toc.zh.yml
    python scripts/zh_edition.py check [NAME ...]      # missing, stale (with a diff), orphan, content checks
    python scripts/zh_edition.py scaffold 02_channel_shuffle   # or book/setup: start a translation file

The format of the translation files (``i18n/zh/<stem>.yml`` for ``notebooks/<stem>.ipynb``,
``i18n/zh/book/<page>.yml`` for ``book/<page>.md``) is described in README.md ("The Chinese edition"):
one entry per English markdown cell (keyed by cell id) or page section (keyed by the heading's slug),
holding the exact English it was translated from (``en``), the Chinese (``zh``) and optionally
``exempt: "<reason>"`` for an entry that is rightly not Chinese.

The English is the source of truth. A Chinese notebook is the English notebook with each markdown cell
replaced by its ``zh``: code cells, outputs, execution counts, ids and metadata are copied, so the two
editions cannot drift. ``check`` compares every stored ``en`` with the current English and prints the diff
of a changed one (a *stale* entry). tests/test_zh_edition.py runs the same checks in `make test`.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from posixpath import normpath

import yaml

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
BOOK = ROOT / "book"
I18N = ROOT / "i18n" / "zh"
TOC_EN = ROOT / "_toc.yml"
TOC_ZH = ROOT / "_toc.zh.yml"
CAPTIONS = I18N / "toc.yml"
LANGUAGE = "zh-CN"
ZH_SUFFIX = ".zh.ipynb"
COLAB_BADGE = re.compile(r"(https://colab\.research\.google\.com/github/[^)\s]*/notebooks/)([^)\s/]+)\.ipynb")
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")


# --- the sources -----------------------------------------------------------------------------------------

def english_notebooks() -> list[Path]:
    return sorted(p for p in NOTEBOOKS.glob("*.ipynb") if not p.name.endswith(ZH_SUFFIX))


def english_pages() -> list[Path]:
    return sorted(BOOK.glob("*.md"))  # book/zh/ is not globbed


def _source(cell) -> str:
    source = cell["source"]
    return source if isinstance(source, str) else "".join(source)


@dataclass
class Unit:
    """One English notebook or page, its translation file and its generated Chinese file."""

    kind: str  # "notebook" or "page"
    english: Path
    translation: Path
    chinese: Path
    name: str = field(init=False)

    def __post_init__(self):
        self.name = self.english.relative_to(ROOT).as_posix()

    @property
    def group(self) -> str:
        return "cells" if self.kind == "notebook" else "sections"

    def english_entries(self) -> dict[str, str]:
        """``{key: English text}`` in the English order."""
        if self.kind == "notebook":
            cells = json.loads(self.english.read_text(encoding="utf-8"))["cells"]
            return {cell["id"]: _source(cell) for cell in cells if cell["cell_type"] == "markdown"}
        return split_sections(self.english.read_text(encoding="utf-8"))

    def translated(self) -> bool:
        return self.translation.is_file()

    def entries(self) -> dict[str, dict]:
        return load_translation(self.translation, self.group)


def units() -> list[Unit]:
    found = [Unit("notebook", p, I18N / f"{p.stem}.yml", p.with_name(p.stem + ZH_SUFFIX))
             for p in english_notebooks()]
    found += [Unit("page", p, I18N / "book" / f"{p.stem}.yml", BOOK / "zh" / p.name) for p in english_pages()]
    return found


def find_unit(name: str) -> Unit:
    """A unit by notebook stem, ``book/<page>``, or a path to the English file."""
    name = name.removesuffix(".ipynb").removesuffix(".md").removeprefix("notebooks/")
    for unit in units():
        stem = unit.english.stem
        if name in (stem, f"book/{stem}") and (unit.kind == "page") == name.startswith("book/"):
            return unit
    raise SystemExit(f"no English notebook or page called {name!r} (try a stem such as "
                     "02_channel_shuffle, or book/setup)")


# --- pages: sections ---------------------------------------------------------------------------------------

FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _heading_lines(text: str):
    """``(line index, level, heading text)`` for each Markdown heading outside fenced code blocks."""
    fence = None
    for index, line in enumerate(text.split("\n")):
        match = FENCE.match(line)
        if match:
            marker = match.group(1)
            if fence is None:
                fence = marker
            elif marker[0] == fence[0] and len(marker) >= len(fence) and not line.strip()[len(marker):]:
                fence = None
            continue
        if fence is None:
            heading = HEADING.match(line)
            if heading:
                yield index, len(heading.group(1)), heading.group(2)


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def split_sections(text: str) -> dict[str, str]:
    """A page's sections, ``{key: text}``: see the module's docstring and README.md."""
    lines = text.split("\n")
    starts = [(index, slugify(title)) for index, _, title in _heading_lines(text)]
    sections, seen = {}, Counter()

    def add(key, chunk):
        chunk = list(chunk)
        while chunk and not chunk[-1].strip():  # trailing blank lines (and the file's last newline)
            chunk.pop()
        body = "\n".join(chunk)
        if key == "_preamble" and not body.strip():
            return
        sections[key] = body

    first = starts[0][0] if starts else len(lines)
    add("_preamble", lines[:first])
    for n, (index, slug) in enumerate(starts):
        seen[slug] += 1
        key = slug if seen[slug] == 1 else f"{slug}-{seen[slug]}"
        end = starts[n + 1][0] if n + 1 < len(starts) else len(lines)
        add(key, lines[index:end])
    return sections


# --- translation files -------------------------------------------------------------------------------------

def load_translation(path: Path, group: str) -> dict[str, dict]:
    """``{key: {"en": ..., "zh": ..., "exempt": ...}}``. Every scalar is read as a string (BaseLoader), so
    that a cell id such as ``12345678`` stays the string it is."""
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.BaseLoader) or {}
    if not isinstance(data, dict) or not isinstance(data.get(group), dict):
        raise ValueError(f"{path.relative_to(ROOT)}: expected a top-level mapping '{group}:'")
    entries = {}
    for key, entry in data[group].items():
        if not isinstance(entry, dict) or "en" not in entry or "zh" not in entry:
            raise ValueError(f"{path.relative_to(ROOT)}: entry {key!r} needs 'en' and 'zh'")
        unknown = set(entry) - {"en", "zh", "exempt"}
        if unknown:
            raise ValueError(f"{path.relative_to(ROOT)}: entry {key!r} has unknown fields {sorted(unknown)}")
        entries[str(key)] = entry
    return entries


class Block(str):
    """A string PyYAML writes in block style when it spans lines."""


yaml.add_representer(Block, lambda dumper, data: dumper.represent_scalar(
    "tag:yaml.org,2002:str", data, style="|" if "\n" in data else None))


def dump_translation(entries: dict[str, dict], group: str) -> str:
    blocks = {key: {name: Block(value) if name in ("en", "zh") else value for name, value in entry.items()}
              for key, entry in entries.items()}
    text = yaml.dump({group: blocks}, allow_unicode=True, sort_keys=False, width=1000)
    assert yaml.safe_load(text) == {group: {k: dict(v) for k, v in entries.items()}}, "YAML round trip"
    return text


# --- links to the Chinese counterparts ---------------------------------------------------------------------

def counterpart(path: str) -> str:
    """The Chinese counterpart of a repository path (``notebooks/X.ipynb``, ``book/X.md``, or the same
    without a suffix, as {doc} writes it); any other path is returned unchanged."""
    parts = path.split("/")
    if len(parts) == 2 and parts[0] == "notebooks" and not parts[1].endswith((".zh.ipynb", ".zh")):
        stem = parts[1].removesuffix(".ipynb")
        if (NOTEBOOKS / f"{stem}.ipynb").is_file() and not stem.endswith(".zh"):
            return f"notebooks/{stem}.zh" + (".ipynb" if parts[1].endswith(".ipynb") else "")
    if len(parts) == 2 and parts[0] == "book":
        stem = parts[1].removesuffix(".md")
        if (BOOK / f"{stem}.md").is_file():
            return f"book/zh/{parts[1]}"
    return path


def _resolve(base: str, target: str) -> str:
    return normpath(f"{base}/{target}") if base else normpath(target)


def map_target(target: str, base_en: str, base_zh: str) -> str:
    """The link ``target`` of an English file in folder ``base_en``, as the Chinese file in ``base_zh``
    writes it: an English chapter or page becomes its Chinese counterpart, other relative paths are
    rewritten to reach the same file, absolute URLs stay (the Colab badge's notebook becomes ``X.zh``)."""
    badge = COLAB_BADGE.fullmatch(target)
    if badge:
        name = badge.group(2)
        return target if name.endswith(".zh") else f"{badge.group(1)}{name}{ZH_SUFFIX}"
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith(("#", "/")):
        return target
    path, hash_, fragment = target.partition("#")
    if not path:
        return target
    resolved = counterpart(_resolve(base_en, path))
    relative = _relative(resolved, base_zh)
    return relative + hash_ + fragment


def _relative(path: str, base: str) -> str:
    base_parts = [p for p in base.split("/") if p]
    parts = path.split("/")
    common = 0
    while common < min(len(base_parts), len(parts)) and base_parts[common] == parts[common]:
        common += 1
    return "/".join([".."] * (len(base_parts) - common) + parts[common:]) or "."


# --- what a cell keeps: extraction --------------------------------------------------------------------------

ROLE = re.compile(r"\{([a-zA-Z][\w:-]*)\}`([^`]*)`")
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
DISPLAY_MATH = re.compile(r"\$\$.+?\$\$", re.S)
INLINE_MATH = re.compile(r"(?<![\\$])\$(?!\$)(?:\\.|[^$\\\n])+?\$")
LABEL = re.compile(r"^\(([^()\s]+)\)=\s*$", re.M)
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(\S+)", re.M)
HTML_URL = re.compile(r"""\b(?:href|src)\s*=\s*["']([^"']+)["']""")
AUTOLINK = re.compile(r"<((?:https?|mailto):[^>\s]+)>")
BARE_URL = re.compile(r"(?<![(<\"'])\bhttps?://[^\s)>\]\"'，。；）]+")
NUMBER = re.compile(r"(?<![\d.])\d+(?:,\d{3})*(?:\.\d+)?")
DIRECTIVE = re.compile(r"^\s*(?:`{3,}|~{3,}|:{3,})\s*\{([\w:-]+)\}", re.M)
OPTION = re.compile(r"^\s*:([\w-]+):(?:\s|$)", re.M)
CROSS_REF_ROLES = ("ref", "numref", "doc", "eq", "term", "download", "any")


@dataclass
class Parts:
    maths: Counter
    code: Counter
    citations: Counter
    references: Counter
    labels: Counter
    headings: list
    urls: Counter
    directives: Counter
    options: list
    fenced: list
    numbers: set
    prose: str  # the text less code, maths, roles, URLs and labels: what is checked for Chinese


def _split_fences(text: str):
    """``(rest, fenced, directives)``: the text with fenced code blocks blanked out, the code blocks (and
    the bodies of {math} and {code} directives), and the names of the fenced directives. A directive's
    body (```` ```{admonition} ````) stays in ``rest``, its own fences handled the same way."""
    lines = text.split("\n")
    out, fenced, directives = [], [], []
    index = 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        if not match:
            out.append(lines[index])
            index += 1
            continue
        marker = match.group(1)
        info = lines[index].strip()[len(marker):].strip()
        end = index + 1
        while end < len(lines):
            close = FENCE.match(lines[end])
            if close and close.group(1)[0] == marker[0] and len(close.group(1)) >= len(marker) \
                    and not lines[end].strip()[len(close.group(1)):]:
                break
            end += 1
        body = "\n".join(lines[index + 1:end])
        if info.startswith("{"):
            name = info[1:].split("}")[0]
            directives.append(name)
            if name in ("math", "code", "code-block", "code-cell", "bibliography"):
                fenced.append(body)
                out.append("")
            else:
                inner, inner_fenced, inner_directives = _split_fences(body)
                fenced += inner_fenced
                directives += inner_directives
                out += ["", inner, ""]
        else:
            fenced.append("\n".join(lines[index:end + 1]))
            out.append("")
        index = end + 1
    return "\n".join(out), fenced, directives


def parts_of(text: str, base: str, mapped: bool = False, base_zh: str | None = None) -> Parts:
    """What a cell must keep. With ``mapped``, link targets are mapped to the Chinese counterparts
    (an English cell in folder ``base`` as the Chinese file in folder ``base_zh`` should write them)."""
    rest, fenced, directives = _split_fences(text)
    directives = Counter(directives + DIRECTIVE.findall(rest))
    options = OPTION.findall(rest)
    maths = Counter(DISPLAY_MATH.findall(rest))
    rest = DISPLAY_MATH.sub(" ", rest)
    roles = ROLE.findall(rest)
    rest = ROLE.sub(" ", rest)
    maths += Counter(INLINE_MATH.findall(rest))
    code = Counter(m.group(0) for m in CODE_SPAN.finditer(INLINE_MATH.sub(" ", rest)))
    rest = INLINE_MATH.sub(" ", rest)
    rest = CODE_SPAN.sub(" ", rest)
    citations, references = Counter(), Counter()
    for role, content in roles:
        if role.startswith("cite"):
            citations.update(key.strip() for key in content.split(",") if key.strip())
        elif role in CROSS_REF_ROLES:
            target = re.search(r"<([^<>]+)>\s*$", content)
            target = (target.group(1) if target else content).strip()
            if role == "doc" and mapped:
                target = map_target(target, base, base_zh if base_zh is not None else base)
            references[f"{role}:{target}"] += 1
    labels = Counter(LABEL.findall(rest))
    rest = LABEL.sub(" ", rest)
    headings = [level for _, level, _ in _heading_lines(text)]
    urls = Counter()
    for pattern in (LINK, REF_DEF, HTML_URL, AUTOLINK):
        for url in pattern.findall(rest):
            urls[map_target(url, base, base_zh if base_zh is not None else base) if mapped else url] += 1
        rest = pattern.sub(lambda m: m.group(0).replace(m.group(1), " "), rest)
    for url in BARE_URL.findall(rest):
        urls[map_target(url, base, base_zh) if mapped else url] += 1
    rest = BARE_URL.sub(" ", rest)
    numbers = set(NUMBER.findall(rest))
    return Parts(maths, code, citations, references, labels, headings, urls, directives, options,
                 fenced, numbers, rest)


def _counter_diff(name: str, english: Counter, chinese: Counter) -> list[str]:
    problems = []
    lost, added = english - chinese, chinese - english
    if lost:
        problems.append(f"{name} of the English missing or changed in the Chinese: {sorted(lost)}")
    if added:
        problems.append(f"{name} in the Chinese that the English does not have: {sorted(added)}")
    return problems


def compare_entry(english: str, chinese: str, base: str, base_zh: str, exempt: bool = False) -> list[str]:
    """Everything a Chinese cell must keep of its English cell (README.md): the problems found."""
    en = parts_of(english, base, mapped=True, base_zh=base_zh)
    zh = parts_of(chinese, base_zh)
    problems = []
    problems += _counter_diff("maths", en.maths, zh.maths)
    problems += _counter_diff("inline code", en.code, zh.code)
    problems += _counter_diff("citation keys", en.citations, zh.citations)
    problems += _counter_diff("cross-references", en.references, zh.references)
    problems += _counter_diff("labels", en.labels, zh.labels)
    problems += _counter_diff("URLs and link targets (mapped to the Chinese counterparts)", en.urls, zh.urls)
    if en.headings != zh.headings:
        problems.append(f"heading levels differ: English {en.headings}, Chinese {zh.headings}")
    if en.directives != zh.directives:  # compared as multisets
        problems.append(f"directives differ: English {en.directives}, Chinese {zh.directives}")
    if en.options != zh.options:
        problems.append(f"directive options differ: English {en.options}, Chinese {zh.options}")
    if en.fenced != zh.fenced:
        problems.append("a fenced code block (or a {math}/{code} body) differs from the English")
    missing = sorted(en.numbers - zh.numbers, key=lambda n: (len(n), n))
    if missing:
        problems.append(f"numbers of the English not written in the Chinese: {missing}")
    if not exempt and not CJK.search(zh.prose):
        problems.append("no Chinese text (mark the entry `exempt: \"<reason>\"` if that is right)")
    return problems


# --- the glossary's terms ------------------------------------------------------------------------------

GLOSSARY = BOOK / "glossary.md"


@dataclass
class Term:
    preferred: str
    alternatives: list
    english: list  # the English forms any of which may stand in the parentheses
    chapter: str | None  # the repository path of the English file that explains it


def _strip_latin_parentheses(text: str) -> str:
    """``批归一化 (BN)`` -> ``批归一化``: a parenthesis without Chinese in it is an English gloss."""
    return re.sub(r"\s*[(（]([^()（）]*)[)）]",
                  lambda m: "" if not CJK.search(m.group(1)) else m.group(0), text)


def _latin_glosses(text: str) -> list:
    """The English in a Chinese form's parentheses (``主干网络 (backbone)``): also fine after the term."""
    return [g for gloss in re.findall(r"[(（]([^()（）]*)[)）]", text) if not CJK.search(gloss)
            for g in _english_forms(gloss)]


def _english_forms(text: str) -> list:
    text = text.replace("$g$", "")
    pieces = re.split(r"[/·,:()\"]", text)
    return [piece.strip() for piece in pieces if len(piece.strip()) >= 2]


def glossary_terms(path: Path = GLOSSARY) -> list:
    """The terms of book/glossary.md's tables. In a row, the first Chinese form is preferred and the others
    are alternatives, unless the English lists as many terms as the Chinese (``卷积 / 卷积核`` against
    ``convolution / kernel``): then each Chinese form is its own term. ``·`` separates terms the same way."""
    terms = []
    columns = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            columns = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if "中文" in cells:
            columns = (cells.index("中文"),
                       next(i for i, c in enumerate(cells) if c.lower().startswith("english")),
                       next((i for i, c in enumerate(cells) if c.lower().startswith("explained")), None))
            continue
        if columns is None or set("".join(cells)) <= set("-: "):
            continue
        zh_cell, en_cell = cells[columns[0]], cells[columns[1]]
        explained = cells[columns[2]] if columns[2] is not None and columns[2] < len(cells) else ""
        link = re.search(r"\]\(([^)#\s]+)", explained)
        chapter = _resolve("book", link.group(1)) if link else None
        zh_groups = [g.strip() for g in zh_cell.split("·")]
        en_groups = [g.strip() for g in en_cell.split("·")]
        if len(zh_groups) != len(en_groups):
            zh_groups, en_groups = [" / ".join(zh_groups)], [" · ".join(en_groups)]
        for zh_group, en_group in zip(zh_groups, en_groups):
            glosses = _latin_glosses(zh_group)
            zh_forms = [f.strip() for f in _strip_latin_parentheses(zh_group).split("/") if f.strip()]
            en_forms = [f.strip() for f in re.sub(r"\([^)]*\)", "", en_group).split("/") if f.strip()]
            if not zh_forms:
                continue
            if len(zh_forms) > 1 and len(zh_forms) == len(en_forms):
                for zh_form, en_form in zip(zh_forms, en_forms):
                    terms.append(Term(zh_form, [], _english_forms(en_form) + glosses, chapter))
            else:
                terms.append(Term(zh_forms[0], zh_forms[1:], _english_forms(en_group) + glosses, chapter))
    return terms


def _term_pattern(form: str) -> re.Pattern:
    """A term as a pattern that allows the one space the typography puts between Chinese and Latin."""
    out = ""
    for a, b in zip(form, form[1:] + " "):
        out += re.escape(a)
        if b != " " and bool(CJK.match(a)) != bool(CJK.match(b)):
            out += r"\s?"
    return re.compile(out)


def _covered_spans(text: str, forms, shorter_than: str) -> list:
    spans = []
    for form in forms:
        if len(form) > len(shorter_than) and _term_pattern(shorter_than).search(form):
            spans += [m.span() for m in _term_pattern(form).finditer(text)]
    return spans


def _occurrences(text: str, form: str, all_forms) -> list:
    """Where ``form`` occurs in ``text`` on its own, not as part of a longer glossary term."""
    covered = _covered_spans(text, all_forms, form)
    return [m for m in _term_pattern(form).finditer(text)
            if not any(start <= m.start() and m.end() <= end for start, end in covered)]


QUOTATION = re.compile(r"“[^”]*”|「[^」]*」|^\s*>.*$", re.M)


def chinese_prose(text: str, base: str, headings: bool = True, quotations: bool = True) -> str:
    """A Chinese cell's prose: code, maths, roles, URLs and labels masked (optionally headings and
    quotations, which the glossary's checks leave alone)."""
    prose = parts_of(text, base).prose
    if not headings:
        prose = "\n".join("" if HEADING.match(line) else line for line in prose.split("\n"))
    if not quotations:
        prose = QUOTATION.sub(" ", prose)
    return prose


QUOTED = "〇〇"  # what a quotation becomes for the checks of the book's own prose


def mask_quoted(chinese: str, english: str) -> str:
    """``chinese`` with every Chinese word of ``english`` masked: Chinese in the English edition is quoted
    (the blog post's words in the appendix, the glossary's terms), not the translator's prose."""
    tokens = {token.strip(",.;:!?'\"()[]|") for token in english.split() if CJK.search(token)}
    for token in sorted(tokens, key=len, reverse=True):
        chinese = chinese.replace(token, QUOTED)
    return chinese


def _translated_prose(unit: Unit, quotations: bool = True, **options) -> str:
    base = unit.chinese.parent.relative_to(ROOT).as_posix()
    return "\n\n".join(
        chinese_prose(entry["zh"] if quotations else mask_quoted(entry["zh"], entry["en"]), base,
                      quotations=quotations, **options)
        for entry in unit.entries().values())


def glossary_problems() -> list:
    """The preferred form with its English in parentheses at its first use in the chapter that explains
    it; no alternative form in the book's own Chinese prose (glossary and quotations aside)."""
    terms = glossary_terms()
    all_forms = [form for term in terms for form in [term.preferred, *term.alternatives]]
    by_name = {unit.name: unit for unit in units()}
    problems = []
    for term in terms:
        unit = by_name.get(term.chapter or "")
        if unit is None or not unit.translated():
            continue
        text = _translated_prose(unit, headings=False)
        text = QUOTATION.sub(" ", text)
        found = _occurrences(text, term.preferred, all_forms)
        if not found:
            problems.append(f"{unit.name}: the glossary's {term.preferred} ({', '.join(term.english)}) is "
                            "not used in the chapter that explains it")
            continue
        after = text[found[0].end():found[0].end() + 80]
        gloss = re.match(r"[*_]*[\u3400-\u9fff]{0,4}[*_]*（([^（）]*)）", after)
        content = gloss.group(1).lower() if gloss else ""
        if not gloss or not any(form.lower() in content or (content and content in form.lower())
                                for form in term.english):
            context = text[max(0, found[0].start() - 20):found[0].end() + 30].replace("\n", " ")
            problems.append(f"{unit.name}: the first use of {term.preferred} needs its English in "
                            f"parentheses, {term.preferred}（{term.english[0]}）: …{context}…")
    for unit in units():
        if not unit.translated() or unit.english == GLOSSARY:
            continue
        text = _translated_prose(unit, quotations=False)
        for term in terms:
            for alternative in term.alternatives:
                for match in _occurrences(text, alternative, all_forms):
                    context = text[max(0, match.start() - 20):match.end() + 20].replace("\n", " ")
                    problems.append(f"{unit.name}: {alternative} is the glossary's alternative: write "
                                    f"{term.preferred}: …{context}…")
    return problems


# --- typography ------------------------------------------------------------------------------------------

def _typography_text(text: str, base: str) -> str:
    """The prose as the linter reads it: inline code, maths and roles become a Latin token ``X`` (they
    are spaced like Latin words), a link keeps only its text, directive and option lines their title."""
    rest, _, _ = _split_fences(text)
    rest = DISPLAY_MATH.sub("X", rest)
    rest = ROLE.sub(lambda m: (re.sub(r"\s*<[^<>]+>\s*$", "", m.group(2))
                               if re.search(r"<[^<>]+>\s*$", m.group(2)) else "X"), rest)
    rest = INLINE_MATH.sub("X", rest)
    rest = CODE_SPAN.sub("X", rest)
    rest = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1), rest)
    rest = REF_DEF.sub("", rest)
    rest = AUTOLINK.sub("X", rest)
    rest = BARE_URL.sub("X", rest)
    rest = re.sub(r"<[^>\n]+>", "", rest)
    rest = LABEL.sub("", rest)
    rest = re.sub(r"^(\s*(?:`{3,}|~{3,}|:{3,})\s*\{[\w:-]+\})", "", rest, flags=re.M)
    rest = OPTION.sub("", rest)
    return rest


# Half-width parentheses that hold Chinese, or an English gloss after a Chinese word (分组卷积(group
# convolution)); not a shape (N, 3, 32, 32) or a figure's panel (c).
HALF_PARENS = re.compile(r"\(([^()\n]*[\u3400-\u9fff][^()\n]*)\)"
                         r"|[\u3400-\u9fff]\s?\([A-Za-z][A-Za-z -]*[A-Za-z]\)")
STRAIGHT_QUOTES = re.compile(r"\"[^\"\n]*[\u3400-\u9fff][^\"\n]*\"")


def typography_problems(text: str, base: str, english: str = "") -> list:
    """i18n/zh/STYLE.md's typography, checked by autocorrect (the linter) on the masked prose, plus two
    rules of our own that autocorrect leaves alone: full-width parentheses and quotation marks in Chinese.
    Chinese quoted from ``english`` (the cell's English) is masked: it is written as its source wrote it."""
    import autocorrect_py

    problems = []
    for line in _typography_text(mask_quoted(text, english), base).split("\n"):
        if not CJK.search(line):
            continue
        body = line.strip()
        fixed = autocorrect_py.format(body)
        if fixed != body:
            problems.append(f"typography: {body!r} -> autocorrect: {fixed!r}")
        if HALF_PARENS.search(body):
            problems.append(f"typography: half-width parentheses in Chinese (use （）): {body!r}")
        if STRAIGHT_QUOTES.search(body):
            problems.append(f"typography: straight quotes around Chinese (use “”): {body!r}")
    return problems


# --- building --------------------------------------------------------------------------------------------

def build_notebook(unit: Unit, entries: dict[str, dict]) -> str:
    import nbformat

    notebook = nbformat.read(unit.english, as_version=4)
    chinese = copy.deepcopy(notebook)
    for cell in chinese.cells:
        if cell.cell_type == "markdown" and cell.id in entries:
            cell.source = entries[cell.id]["zh"]
    chinese.metadata["language"] = LANGUAGE
    return nbformat.writes(chinese) + "\n"


def build_page(entries: dict[str, dict], english: dict[str, str]) -> str:
    texts = [entries[key]["zh"] if key in entries else text for key, text in english.items()]
    return "\n\n".join(texts) + "\n"


def generated_files() -> dict[Path, str]:
    """``{path: content}`` of every file ``build`` writes, from the current English and translations."""
    files = {}
    for unit in units():
        if not unit.translated():
            continue
        entries, english = unit.entries(), unit.english_entries()
        if unit.kind == "notebook":
            files[unit.chinese] = build_notebook(unit, entries)
        else:
            files[unit.chinese] = build_page(entries, english)
    toc = build_toc({path for path in files})
    if toc is not None:
        files[TOC_ZH] = toc
    return files


def captions() -> dict[str, str]:
    if not CAPTIONS.is_file():
        return {}
    data = yaml.safe_load(CAPTIONS.read_text(encoding="utf-8")) or {}
    return dict(data.get("captions", {}))


def _zh_entry(entry: str) -> str:
    return counterpart(entry).removesuffix(".ipynb") if entry.startswith("notebooks/") \
        else counterpart(entry + ".md").removesuffix(".md")


def build_toc(chinese_files: set[Path]) -> str | None:
    """``_toc.zh.yml``: ``_toc.yml`` with each translated file mapped to its Chinese counterpart and the
    part captions translated; None while the root page has no translation (no Chinese book yet)."""
    toc = yaml.safe_load(TOC_EN.read_text(encoding="utf-8"))
    existing = {path.relative_to(ROOT).with_suffix("").as_posix() for path in chinese_files}
    existing = {name.removesuffix(".zh") + ".zh" if name.endswith(".zh") else name for name in existing}
    names = captions()

    def convert(node):
        if isinstance(node, list):
            converted = [convert(item) for item in node]
            return [item for item in converted if item is not None]
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key in ("file", "root"):
                    value = _zh_entry(value)
                    if value not in existing:
                        return None
                elif key == "caption":
                    value = names.get(value, value)
                elif isinstance(value, (list, dict)):
                    value = convert(value)
                    if not value and key in ("chapters", "sections", "parts"):
                        if key == "chapters":
                            return None
                        continue
                out[key] = value
            return out
        return node

    if _zh_entry(toc["root"]) not in existing:
        return None
    converted = convert(toc)
    header = "# Generated by scripts/zh_edition.py build from _toc.yml and i18n/zh/toc.yml: do not edit.\n"
    return header + yaml.dump(converted, allow_unicode=True, sort_keys=False, width=1000)


def build() -> int:
    files = generated_files()
    for unit in units():
        if not unit.translated():
            print(f"skipped {unit.name}: no translation file {unit.translation.relative_to(ROOT)} yet")
            if unit.chinese.is_file():
                unit.chinese.unlink()
                print(f"  removed {unit.chinese.relative_to(ROOT)}")
    if TOC_ZH not in files and TOC_ZH.is_file():
        TOC_ZH.unlink()
        print("removed _toc.zh.yml: the root page has no translation yet")
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        old = path.read_text(encoding="utf-8") if path.is_file() else None
        if old != content:
            path.write_text(content, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    return 0


# --- checking ----------------------------------------------------------------------------------------------

def stale_diff(unit: Unit, key: str, stored: str, current: str) -> str:
    return "".join(difflib.unified_diff(
        stored.splitlines(keepends=True), current.splitlines(keepends=True),
        fromfile=f"{unit.translation.relative_to(ROOT)} [{key}] en (translated from)",
        tofile=f"{unit.name} [{key}] (current English)", lineterm="\n")).rstrip("\n") + "\n"


@dataclass
class Report:
    unit: Unit
    untranslated: bool = False
    missing: list = field(default_factory=list)
    stale: dict = field(default_factory=dict)  # key -> diff
    orphans: list = field(default_factory=list)
    order: bool = True
    content: dict = field(default_factory=dict)  # key -> problems
    error: str | None = None

    def ok(self) -> bool:
        return not (self.untranslated or self.missing or self.stale or self.orphans or self.content
                    or self.error or not self.order)


def folders(unit: Unit) -> tuple[str, str]:
    en = unit.english.parent.relative_to(ROOT).as_posix()
    zh = unit.chinese.parent.relative_to(ROOT).as_posix()
    return en, zh


def check_unit(unit: Unit, content: bool = True, typography: bool = True) -> Report:
    report = Report(unit)
    if not unit.translated():
        report.untranslated = True
        return report
    try:
        entries = unit.entries()
    except (ValueError, yaml.YAMLError) as error:
        report.error = str(error)
        return report
    english = unit.english_entries()
    report.missing = [key for key in english if key not in entries]
    report.orphans = [key for key in entries if key not in english]
    common = [key for key in entries if key in english]
    report.order = common == [key for key in english if key in entries]
    base_en, base_zh = folders(unit)
    for key in common:
        entry = entries[key]
        if entry["en"] != english[key]:
            report.stale[key] = stale_diff(unit, key, entry["en"], english[key])
        elif content:
            problems = compare_entry(english[key], entry["zh"], base_en, base_zh, exempt="exempt" in entry)
            if typography and "exempt" not in entry:
                problems += typography_problems(entry["zh"], base_zh, english[key])
            if problems:
                report.content[key] = problems
    return report


def format_report(report: Report) -> str:
    unit = report.unit
    if report.untranslated:
        return f"{unit.name}: MISSING translation file {unit.translation.relative_to(ROOT)} " \
               f"(start one: python scripts/zh_edition.py scaffold {_scaffold_name(unit)})\n"
    if report.error:
        return f"{unit.name}: BROKEN translation file: {report.error}\n"
    if report.ok():
        return f"{unit.name}: ok\n"
    lines = [f"{unit.name} ({unit.translation.relative_to(ROOT)}):"]
    for key in report.missing:
        lines.append(f"  missing: no entry for {unit.kind == 'notebook' and 'cell' or 'section'} {key}")
    for key in report.orphans:
        lines.append(f"  orphan: entry {key} matches no English {unit.group[:-1]} (remove it)")
    if not report.order:
        lines.append("  the entries are not in the English order")
    for key, diff in report.stale.items():
        lines.append(f"  stale: {key}: the English changed since the translation; update `en` to the "
                     "current English and revise `zh`:")
        lines += ["    " + line for line in diff.splitlines()]
    for key, problems in report.content.items():
        for problem in problems:
            lines.append(f"  {key}: {problem}")
    return "\n".join(lines) + "\n"


def _scaffold_name(unit: Unit) -> str:
    return unit.english.stem if unit.kind == "notebook" else f"book/{unit.english.stem}"


def check_generated() -> list[str]:
    problems = []
    files = generated_files()
    for path, content in files.items():
        if not path.is_file() or path.read_text(encoding="utf-8") != content:
            problems.append(f"{path.relative_to(ROOT)} is not what build writes: run "
                            "`python scripts/zh_edition.py build`")
    for path in list(NOTEBOOKS.glob(f"*{ZH_SUFFIX}")) + list((BOOK / "zh").glob("*.md")):
        if path not in files:
            problems.append(f"{path.relative_to(ROOT)} has no translation file: run build to remove it")
    return problems


def check(names: list[str]) -> int:
    selected = [find_unit(name) for name in names] if names else units()
    failed = False
    for unit in selected:
        report = check_unit(unit)
        sys.stdout.write(format_report(report))
        failed |= not report.ok()
    if not names:
        names_en = set(captions())
        toc_captions = re.findall(r"caption:\s*(.+)", TOC_EN.read_text(encoding="utf-8"))
        for caption in toc_captions:
            if caption.strip() not in names_en:
                print(f"_toc.yml: part caption {caption.strip()!r} has no translation in i18n/zh/toc.yml")
                failed = True
        for problem in check_generated() + glossary_problems():
            print(problem)
            failed = True
    return 1 if failed else 0


# --- scaffolding -------------------------------------------------------------------------------------------

def scaffold(name: str) -> int:
    """Write a translation file whose entries hold the English (``zh`` = ``en``, to be translated); for
    an existing file, add the missing entries and keep the rest, in the English order."""
    unit = find_unit(name)
    english = unit.english_entries()
    existing = unit.entries() if unit.translated() else {}
    entries = {}
    base_en, base_zh = folders(unit)
    for key, text in english.items():
        if key in existing:
            entries[key] = existing[key]
        else:
            zh = text
            for pattern in (LINK, REF_DEF):  # links already pointing at the Chinese counterparts
                zh = pattern.sub(lambda m: m.group(0).replace(
                    m.group(1), map_target(m.group(1), base_en, base_zh)), zh)
            entries[key] = {"en": text, "zh": zh}
    entries.update({key: value for key, value in existing.items() if key not in entries})  # orphans kept
    unit.translation.parent.mkdir(parents=True, exist_ok=True)
    unit.translation.write_text(dump_translation(entries, unit.group), encoding="utf-8")
    added = len(entries) - len(existing)
    print(f"wrote {unit.translation.relative_to(ROOT)}: {added} new entries (zh = the English, to translate)")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="write the Chinese notebooks, pages and _toc.zh.yml")
    checking = commands.add_parser("check", help="report missing, stale and orphan entries; exit 1 on any")
    checking.add_argument("names", nargs="*", help="notebook stems or book/<page> (default: all)")
    scaffolding = commands.add_parser("scaffold", help="start (or complete) a translation file")
    scaffolding.add_argument("name", help="a notebook stem (02_channel_shuffle) or book/<page>")
    args = parser.parse_args(argv)
    if args.command == "build":
        return build()
    if args.command == "check":
        return check(args.names)
    return scaffold(args.name)


if __name__ == "__main__":
    sys.exit(main())
