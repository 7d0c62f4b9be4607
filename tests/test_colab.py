"""Colab-like test: every notebook runs alone, from an empty folder, through its setup cell, as in Colab;
and, without Colab, as on any Jupyter that opens a notebook on its own (Kaggle, SageMaker Studio Lab,
ModelScope, a downloaded notebook).

Colab opens one notebook into an empty folder. The notebook's first code cell then clones the book,
pip-installs its package from the clone and moves into the clone's ``notebooks/`` folder. This test does
the same on this machine, offline, for every notebook:

- the notebook is copied alone into an empty temporary folder, the kernel's working directory;
- a stand-in ``google.colab`` module is imported at kernel start (an IPython startup file), so
  ``"google.colab" in sys.modules`` is true, as in Colab;
- the repository the setup cell clones is a local bare repository holding this checkout's ``HEAD``,
  named by ``SHUFFLENET_BOOK_REPOSITORY`` (a ``file://`` URL);
- pip installs into a folder of the test's own (``PIP_TARGET``, first on the kernel's ``PYTHONPATH``),
  without an index, dependencies or build isolation, so the test's environment is left untouched and
  the notebook imports the package built from the clone.

So it proves two things: every notebook runs the way Colab runs it, and everything a notebook reads
(the package, ``notebooks/results/...``) is committed. Uncommitted changes to the package or the results
are not seen here: commit them first. The notebook itself is taken from the working tree.

The stand-alone variant has no ``google.colab``: instead this environment's own ``shufflenet`` (the
editable install of `make`, or a checkout on ``sys.path``) is hidden from the kernel at start, as on a
Jupyter where the book was never installed, and the setup cell must see that and clone and install.
It runs on STANDALONE, a subset: after the setup cell a notebook runs exactly as in the Colab-like test,
so the subset covers what differs (the setup cell's condition, the clone, pip and the move into the
clone) for a notebook that reads only the package and for one that reads ``notebooks/results/``. It adds
about 70 s (measured on a loaded 2-core machine; Chapter 5 alone took 470 s there, so every notebook
twice would more than double the test's time).
"""

import os
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parent.parent
# The English notebooks; the Chinese ones (*.zh.ipynb) are checked by tests/test_zh_edition.py.
NOTEBOOKS = sorted(p for p in (ROOT / "notebooks").glob("*.ipynb") if not p.name.endswith(".zh.ipynb"))
BRANCH = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))["repository"]["branch"]
CLONE_NAME = "shufflenet-v1-book"  # the folder the setup cell clones into
# The stand-alone variant's notebooks (see above): the first chapter, and Chapter 6, which reads results/.
STANDALONE = [path for path in NOTEBOOKS if path.name in ("00_getting_started.ipynb", "06_speed.ipynb")]

# The stand-alone kernel's startup file: no shufflenet but the copy pip installs into the test's folder.
HIDE_THE_PACKAGE = """import os, sys
site = {site!r}
editable = lambda item: getattr(item, "__module__", "").startswith("__editable__")
sys.meta_path[:] = [finder for finder in sys.meta_path if not editable(finder)]
sys.path_hooks[:] = [hook for hook in sys.path_hooks if not editable(hook)]
sys.path[:] = [entry for entry in sys.path if os.path.realpath(entry or ".") == site
               or not os.path.isfile(os.path.join(entry or ".", "shufflenet", "__init__.py"))]
sys.path_importer_cache.clear()
"""

pytestmark = pytest.mark.skipif(
    shutil.which("git") is None or not (ROOT / ".git").exists(),
    reason="the Colab-like test clones this checkout: it needs git and a git checkout")


def git(*args, cwd=ROOT):
    done = subprocess.run(["git", *map(str, args)], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, f"git {' '.join(map(str, args))} failed: {done.stderr.strip()}"


def bare_origin(source: Path, folder: Path) -> str:
    """A bare repository holding ``source``'s HEAD as the book's branch; its ``file://`` URL."""
    bare = folder / "origin.git"
    git("init", "-q", "--bare", bare)
    git("config", "receive.shallowUpdate", "true", cwd=bare)  # CI checkouts are often shallow
    git("push", "-q", bare, f"HEAD:refs/heads/{BRANCH}", cwd=source)
    git("symbolic-ref", "HEAD", f"refs/heads/{BRANCH}", cwd=bare)  # its default branch, as on GitHub
    return bare.as_uri()  # file://: git clones it shallow, as the setup cell asks


@pytest.fixture(scope="session")
def origin(tmp_path_factory) -> str:
    return bare_origin(ROOT, tmp_path_factory.mktemp("origin"))


def colab_environment(folder: Path, repository: str, colab: bool = True) -> dict:
    """The kernel's environment: a stand-in google.colab (or, without Colab, this environment's shufflenet
    hidden), and pip kept inside ``folder``."""
    stand_in = folder / "stand-in"  # a namespace package google (no google/__init__.py) with colab in it
    startup = folder / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    site = folder / "site"
    site.mkdir()  # there before the kernel starts, as site-packages is, so imports look into it
    if colab:
        (stand_in / "google" / "colab").mkdir(parents=True)
        (stand_in / "google" / "colab" / "__init__.py").write_text('"""Stand-in for Colab\'s module."""\n')
        (startup / "00-colab.py").write_text("import google.colab\n")
    else:
        (startup / "00-alone.py").write_text(HIDE_THE_PACKAGE.format(site=os.path.realpath(site)))
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(site), str(stand_in)]),  # the installed copy comes first
        IPYTHONDIR=str(folder / "ipython"),
        SHUFFLENET_BOOK_REPOSITORY=repository,
        SHUFFLENET_FULL_RUN=os.environ.get("SHUFFLENET_FULL_RUN", "0"),  # see conftest.py
        PIP_CONFIG_FILE=os.devnull,  # no user or site pip configuration
        PIP_TARGET=str(site),
        PIP_NO_INDEX="1",
        PIP_NO_DEPS="1",
        # pip stores a --no-X flag's variable as the flag's destination (build_isolation), so "0"
        # turns isolation off: the build uses this environment's setuptools, offline.
        PIP_NO_BUILD_ISOLATION="0",
        PIP_NO_CACHE_DIR="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    return env


def run_like_colab(notebook, name: str, folder: Path, repository: str, timeout: int = 600,
                   colab: bool = True):
    """Execute ``notebook`` alone in the empty folder ``folder/content``, as Colab would (or, with
    ``colab=False``, any Jupyter without Colab's module); return the clone."""
    content = folder / "content"
    content.mkdir()
    nbformat.write(notebook, content / name)
    clone = (content / CLONE_NAME).resolve()
    site = (folder / "site").resolve()
    # An extra last cell: Colab's module was there, the kernel works in the clone's notebooks/ folder,
    # and the package it imported is the copy pip installed from the clone.
    check = nbformat.v4.new_code_cell(
        "import os, sys, shufflenet\n"
        f"assert ('google.colab' in sys.modules) == {colab}\n"
        f"assert os.path.realpath(os.getcwd()) == {str(clone / 'notebooks')!r}, os.getcwd()\n"
        "assert os.path.realpath(shufflenet.__file__) == "
        f"{str(site / 'shufflenet' / '__init__.py')!r}, shufflenet.__file__\n")
    notebook.cells.append(check)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(content)}})
    client.execute(env=colab_environment(folder, repository, colab))
    installed = site / "shufflenet"
    for source in sorted((clone / "shufflenet").glob("*.py")):
        assert (installed / source.name).read_bytes() == source.read_bytes(), \
            f"the installed {source.name} is not the clone's"
    return clone


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_as_in_colab(path, origin, tmp_path):
    clone = run_like_colab(nbformat.read(path, as_version=4), path.name, tmp_path, origin)
    assert (clone / "notebooks" / path.name).is_file(), f"{path.name} is not committed"
    for folder in tmp_path.iterdir():  # passed: free the disk (a clone and an install per notebook)
        shutil.rmtree(folder)


@pytest.mark.parametrize("path", STANDALONE, ids=lambda p: p.name)
def test_notebook_runs_alone_without_colab(path, origin, tmp_path):
    """As on Kaggle, SageMaker Studio Lab, ModelScope or a downloaded notebook: no google.colab, and no
    shufflenet installed; the setup cell clones and installs."""
    clone = run_like_colab(nbformat.read(path, as_version=4), path.name, tmp_path, origin, colab=False)
    assert (clone / "notebooks" / path.name).is_file()
    for folder in tmp_path.iterdir():
        shutil.rmtree(folder)


def _reader(setup: str, name: str):
    """A tiny notebook: the book's setup cell, then a cell that reads ``results/NAME``."""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [nbformat.v4.new_code_cell(setup),
                      nbformat.v4.new_code_cell(f'print(open("results/{name}").read())')]
    return notebook


def test_fails_on_a_file_that_is_not_committed(origin, tmp_path):
    """The test must be able to fail: a notebook reading an uncommitted file runs locally, not in Colab."""
    cells = nbformat.read(NOTEBOOKS[0], as_version=4).cells
    setup = next(cell.source for cell in cells if cell.cell_type == "code")
    checkout = tmp_path / "checkout"  # a working tree of HEAD, as a contributor has
    git("clone", "-q", "--branch", BRANCH, origin, checkout)
    name = "not-committed.txt"
    (checkout / "notebooks" / "results" / name).write_text("only in the working tree\n")
    notebook = _reader(setup, name)

    # Locally (no Colab module), from the checkout's notebooks/ folder, the file is there.
    local = nbformat.from_dict(notebook)
    NotebookClient(local, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(checkout / "notebooks")}}).execute()

    # As in Colab, the clone lacks it.
    (tmp_path / "before").mkdir()
    with pytest.raises(CellExecutionError, match=r"FileNotFoundError.*not-committed\.txt"):
        run_like_colab(nbformat.from_dict(notebook), "reader.ipynb", tmp_path / "before",
                       bare_origin(checkout, tmp_path / "before"))

    # Committed, the same notebook passes.
    git("add", f"notebooks/results/{name}", cwd=checkout)
    git("-c", "user.name=test", "-c", "user.email=test@example.invalid",
        "commit", "-q", "-m", "commit the file", cwd=checkout)
    (tmp_path / "after").mkdir()
    run_like_colab(nbformat.from_dict(notebook), "reader.ipynb", tmp_path / "after",
                   bare_origin(checkout, tmp_path / "after"))
