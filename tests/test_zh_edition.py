"""The Chinese edition (issue 17): generated from the English by scripts/zh_edition.py, and checked here.

Fast and offline: nothing is executed. nbval runs the English notebooks only (the root conftest.py leaves
``*.zh.ipynb`` out): a Chinese notebook's code cells and outputs are the English ones by construction, and
the first tests below check that they are.

A chapter or page without a translation file fails ``test_translation_is_complete_and_current`` (with the
command that starts one); the checks of its content are then skipped, not crashed.
"""

import importlib.util
import json
import shutil
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import zh_edition as zh  # noqa: E402

UNITS = zh.units()
CHINESE_NOTEBOOKS = sorted(zh.NOTEBOOKS.glob(f"*{zh.ZH_SUFFIX}"))


def _id(unit) -> str:
    return unit.name


def _translated(unit):
    if not unit.translated():
        pytest.skip(f"{unit.name} has no translation yet (test_translation_is_complete_and_current fails)")
    return unit


# --- completeness: every English cell and section has a current translation ----------------------------

@pytest.mark.parametrize("unit", UNITS, ids=_id)
def test_translation_is_complete_and_current(unit):
    report = zh.check_unit(unit, content=False)
    assert report.ok(), zh.format_report(report)


def test_every_part_caption_is_translated():
    captions = zh.captions()
    toc = zh.yaml.safe_load(zh.TOC_EN.read_text(encoding="utf-8"))
    missing = [part["caption"] for part in toc.get("parts", []) if part["caption"] not in captions]
    assert not missing, f"add these part captions to i18n/zh/toc.yml: {missing}"


def test_the_committed_chinese_files_are_what_build_writes():
    problems = zh.check_generated()
    assert not problems, "\n".join(problems)


# --- the Chinese notebooks share everything but the prose ------------------------------------------------

@pytest.mark.parametrize("path", CHINESE_NOTEBOOKS, ids=lambda p: p.name)
def test_chinese_notebook_has_the_english_code_outputs_ids_and_markers(path):
    english_path = path.with_name(path.name.removesuffix(zh.ZH_SUFFIX) + ".ipynb")
    assert english_path.is_file(), f"{path.name} has no English notebook"
    english = json.loads(english_path.read_text(encoding="utf-8"))
    chinese = json.loads(path.read_text(encoding="utf-8"))
    assert [(c["cell_type"], c.get("id")) for c in chinese["cells"]] == \
        [(c["cell_type"], c.get("id")) for c in english["cells"]], "cell types and ids differ"
    for en, zh_cell in zip(english["cells"], chinese["cells"]):
        if en["cell_type"] == "code":
            # source (and so its NBVAL_* comments), outputs, execution count, metadata (nbval tags)
            assert zh_cell == en, f"code cell {en['id']} differs from the English"
        else:
            assert zh_cell["metadata"] == en["metadata"], f"the metadata of cell {en['id']} differs"
    assert chinese["metadata"].pop("language") == zh.LANGUAGE
    assert chinese["metadata"] == english["metadata"]
    for key in ("nbformat", "nbformat_minor"):
        assert chinese[key] == english[key]


def test_nbval_collects_the_english_notebooks_only():
    """The root conftest.py leaves the Chinese notebooks out of `pytest --nbval notebooks`."""
    spec = importlib.util.spec_from_file_location("root_conftest", ROOT / "conftest.py")
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    globs = getattr(conftest, "collect_ignore_glob", [])
    assert any(fnmatch("notebooks/02_channel_shuffle.zh.ipynb", pattern) for pattern in globs)
    assert not any(fnmatch("notebooks/02_channel_shuffle.ipynb", pattern) for pattern in globs)


# --- per cell: what the Chinese keeps, Chinese text, typography -------------------------------------------

@pytest.mark.parametrize("unit", UNITS, ids=_id)
def test_chinese_cells_keep_maths_code_references_urls_and_numbers(unit):
    _translated(unit)
    report = zh.check_unit(unit, content=True, typography=False)
    problems = [f"{key}: {problem}" for key, items in report.content.items() for problem in items]
    assert not problems, f"{unit.name}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("unit", UNITS, ids=_id)
def test_typography_follows_the_style_guide(unit):
    """i18n/zh/STYLE.md, checked by autocorrect (code, maths and URLs masked)."""
    _translated(unit)
    base = zh.folders(unit)[1]
    problems = [f"{key}: {problem}" for key, entry in unit.entries().items() if "exempt" not in entry
                for problem in zh.typography_problems(entry["zh"], base, entry["en"])]
    assert not problems, f"{unit.name}:\n  " + "\n  ".join(problems)


def test_glossary_terms_in_their_preferred_form_with_the_english_on_first_use():
    problems = zh.glossary_problems()
    assert not problems, "\n".join(problems)


# --- the checks can fail -------------------------------------------------------------------------------

def test_compare_entry_finds_what_a_translation_lost():
    english = ("With $g = 3$ groups, `conv1x1` costs 1,000 multiply-adds {cite}`zhang2018shufflenet`; see "
               "[Chapter 2](02_channel_shuffle.ipynb) and {ref}`the unit <unit>`.\n\n(label-x)=\n## Title")
    good = ("当 $g = 3$ 时，`conv1x1` 需要 1,000 次乘加 {cite}`zhang2018shufflenet`；见"
            "[第 2 章](02_channel_shuffle.zh.ipynb)与{ref}`这个单元 <unit>`。\n\n(label-x)=\n## 标题")
    assert zh.compare_entry(english, good, "notebooks", "notebooks") == []
    broken = {
        "maths": good.replace("$g = 3$", "$g=3$"),
        "inline code": good.replace("`conv1x1`", "`卷积`"),
        "number": good.replace("1,000", "一千"),
        "citation": good.replace("zhang2018shufflenet", "zhang2018"),
        "cross-reference": good.replace("<unit>", "<unit-zh>"),
        "label": good.replace("(label-x)=", ""),
        "heading": good.replace("## 标题", "### 标题"),
        "link": good.replace("02_channel_shuffle.zh.ipynb", "02_channel_shuffle.ipynb"),
        "Chinese": english.replace("Chapter 2", "Chapter 2").replace(".ipynb", ".zh.ipynb"),
    }
    for what, text in broken.items():
        assert zh.compare_entry(english, text, "notebooks", "notebooks"), f"a changed {what} went unnoticed"
    assert zh.compare_entry("$$x$$", "$$x$$", "notebooks", "notebooks", exempt=True) == []


def test_links_map_to_the_chinese_counterparts():
    assert zh.map_target("setup.md", "book", "book/zh") == "setup.md"
    assert zh.map_target("../notebooks/02_channel_shuffle.ipynb#x", "book", "book/zh") == \
        "../../notebooks/02_channel_shuffle.zh.ipynb#x"
    assert zh.map_target("../book/setup.md", "notebooks", "notebooks") == "../book/zh/setup.md"
    assert zh.map_target("results/a.json", "notebooks", "notebooks") == "results/a.json"
    badge = "https://colab.research.google.com/github/o/r/blob/main/notebooks/02_channel_shuffle.ipynb"
    assert zh.map_target(badge, "notebooks", "notebooks") == badge.replace(".ipynb", ".zh.ipynb")


def test_typography_check_finds_spacing_and_half_width_punctuation():
    assert zh.typography_problems("当 $g = 3$ 时，调用 `conv1x1`。", "notebooks") == []
    for bad in ("使用PyTorch的函数。", "当$g = 3$时，", "调用`conv1x1`时。", "这是什么?",
                "分组卷积(group convolution)。", "通道混洗 。", '他说"你好"。'):
        assert zh.typography_problems(bad, "notebooks"), f"{bad!r} passed the typography check"


def test_chinese_quoted_from_the_english_is_not_checked_as_prose():
    english = 'The post calls it "组卷积", and writes "进行concat,而不再是add".'
    chinese = "博文称之为“组卷积”，并写道“进行concat,而不再是add”。"
    assert zh.typography_problems(chinese, "notebooks", english) == []
    assert zh.typography_problems(chinese, "notebooks"), "the quoted words were not masked"
    assert "组卷积" not in zh.mask_quoted(chinese, english)


def test_the_chinese_config_is_the_english_one_but_for_language_title_and_address():
    english = zh.yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    chinese = zh.yaml.safe_load((ROOT / "_config.zh.yml").read_text(encoding="utf-8"))
    config = chinese["sphinx"]["config"]
    assert (config.pop("language"), config.pop("html_search_language")) == ("zh_CN", "zh")
    assert chinese.pop("title") != english.pop("title")
    assert chinese["html"].pop("baseurl") == english["html"].pop("baseurl") + "zh/"
    assert chinese == english, "_config.zh.yml must follow _config.yml"


def test_glossary_alternatives_are_found_but_not_inside_longer_terms():
    forms = ["分组卷积", "组卷积", "逐点组卷积", "分组数", "组数"]
    text = "分组卷积与逐点组卷积按分组数计算；组卷积"
    assert [m.start() for m in zh._occurrences(text, "组卷积", forms)] == [len(text) - 3]
    assert zh._occurrences("按分组数计算", "组数", forms) == []
    assert [m.group(0) for m in zh._occurrences("ShuffleNet 单元", "ShuffleNet单元", forms)] == \
        ["ShuffleNet 单元"]
    terms = {term.preferred: term for term in zh.glossary_terms()}
    assert "组卷积" in terms["分组卷积"].alternatives  # the first Chinese form of a row is preferred
    assert terms["分组卷积"].chapter == "notebooks/01_group_convolution.ipynb"


def test_page_sections_follow_the_headings():
    text = "(intro)=\n# Title\n\nText.\n\n```\n# not a heading\n```\n\n## Part\n\nMore.\n\n## Part\n\nEnd.\n"
    assert zh.split_sections(text) == {
        "_preamble": "(intro)=", "title": "# Title\n\nText.\n\n```\n# not a heading\n```",
        "part": "## Part\n\nMore.", "part-2": "## Part\n\nEnd."}


@pytest.fixture
def copy_of_the_book(tmp_path, monkeypatch):
    """A copy of the English sources in ``tmp_path``, and zh_edition pointed at it."""
    for name in ("notebooks/02_channel_shuffle.ipynb", "_toc.yml", "i18n/zh/toc.yml", "book/glossary.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    for name, value in (("ROOT", tmp_path), ("NOTEBOOKS", tmp_path / "notebooks"),
                        ("BOOK", tmp_path / "book"), ("I18N", tmp_path / "i18n" / "zh"),
                        ("TOC_EN", tmp_path / "_toc.yml"), ("TOC_ZH", tmp_path / "_toc.zh.yml"),
                        ("CAPTIONS", tmp_path / "i18n/zh/toc.yml"),
                        ("GLOSSARY", tmp_path / "book" / "glossary.md")):
        monkeypatch.setattr(zh, name, value)
    return tmp_path


def test_changing_one_english_sentence_makes_the_check_fail_with_a_diff(copy_of_the_book, capsys):
    root = copy_of_the_book
    unit = zh.find_unit("02_channel_shuffle")
    assert zh.check_unit(unit).untranslated  # not yet translated: reported, not a crash
    assert "MISSING translation file" in zh.format_report(zh.check_unit(unit))

    assert zh.main(["scaffold", "02_channel_shuffle"]) == 0  # en = zh = the English
    assert zh.check_unit(unit, content=False).ok()
    assert zh.main(["build"]) == 0
    built = root / "notebooks" / "02_channel_shuffle.zh.ipynb"
    assert built.is_file()
    capsys.readouterr()

    path = root / "notebooks" / "02_channel_shuffle.ipynb"
    notebook = json.loads(path.read_text(encoding="utf-8"))
    cell = next(c for c in notebook["cells"][1:] if c["cell_type"] == "markdown")
    source = "".join(cell["source"])
    sentence = next(line for line in source.splitlines() if len(line.split()) > 5)
    changed = sentence.replace(sentence.split()[2], "CHANGED", 1)
    cell["source"] = source.replace(sentence, changed, 1)
    path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    report = zh.check_unit(unit, content=False)
    assert list(report.stale) == [cell["id"]]
    diff = report.stale[cell["id"]]
    assert f"-{sentence}" in diff and f"+{changed}" in diff, diff
    assert zh.main(["check", "02_channel_shuffle"]) == 1
    out = capsys.readouterr().out
    assert "stale" in out and f"+{changed}" in out, out

    # A changed prose cell leaves the built notebook as it was (its Chinese is stale, not gone); a changed
    # code cell must be carried over by build, and the check of the generated files says so until it is.
    assert zh.check_generated() == []
    code = next(c for c in notebook["cells"] if c["cell_type"] == "code")
    code["source"] = "".join(code["source"]) + "\n# changed"
    path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    assert zh.check_generated() == ["notebooks/02_channel_shuffle.zh.ipynb is not what build writes: "
                                    "run `python scripts/zh_edition.py build`"]


def test_build_skips_what_has_no_translation_and_maps_the_toc(copy_of_the_book, capsys):
    root = copy_of_the_book
    zh.main(["build"])
    assert "skipped notebooks/02_channel_shuffle.ipynb" in capsys.readouterr().out
    assert not (root / "_toc.zh.yml").exists()  # no Chinese root page yet: no Chinese book
    (root / "book" / "intro.md").write_text("# Intro\n\nText.\n", encoding="utf-8")
    zh.main(["scaffold", "book/intro"])
    zh.main(["scaffold", "02_channel_shuffle"])
    zh.main(["build"])
    toc = zh.yaml.safe_load((root / "_toc.zh.yml").read_text(encoding="utf-8"))
    assert toc["root"] == "book/zh/intro"
    assert toc["parts"] == [{"caption": "基础", "chapters": [{"file": "notebooks/02_channel_shuffle.zh"}]}]
    assert (root / "book" / "zh" / "intro.md").read_text(encoding="utf-8") == "# Intro\n\nText.\n"


def test_the_glossary_check_wants_the_english_at_the_first_use_and_no_alternative(copy_of_the_book):
    unit = zh.find_unit("02_channel_shuffle")
    zh.main(["scaffold", "02_channel_shuffle"])
    entries = unit.entries()
    keys = list(entries)

    def problems_with(first: str, later: str) -> list:
        for key in keys:
            entries[key]["zh"] = "其他内容。"
        entries[keys[1]]["zh"], entries[keys[2]]["zh"] = first, later
        unit.translation.write_text(zh.dump_translation(entries, "cells"), encoding="utf-8")
        return [p for p in zh.glossary_problems() if "use of 通道混洗 " in p or "通道重排 is" in p]

    assert problems_with("**通道混洗**（channel shuffle）是一种置换。", "通道混洗很便宜。") == []
    assert any("first use of 通道混洗" in p
               for p in problems_with("通道混洗是一种置换。", "通道混洗（channel shuffle）"))
    assert any("通道重排 is the glossary's alternative" in p
               for p in problems_with("通道混洗（channel shuffle）", "也叫通道重排。"))
    assert problems_with("通道混洗（channel shuffle）", "博文写作“通道重排”。") == []  # a quotation
