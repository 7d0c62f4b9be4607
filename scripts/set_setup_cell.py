"""Write the book's setup cell (SETUP below) into every English notebook: the first code cell's source only.

    python scripts/set_setup_cell.py        # then: python scripts/zh_edition.py build

Nothing else of a notebook changes (no other cell, no output, no execution count), so the diff is that
cell's source. tests/test_project.py checks that every notebook starts with the same setup cell, and
tests/test_colab.py runs each notebook through it as Colab and as a stand-alone Jupyter would.
"""

import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent

SETUP = r'''# Colab, Kaggle, SageMaker Studio Lab, ModelScope or any Jupyter that opens this
# notebook on its own: this cell clones the book, installs its package from the clone
# and moves into the clone's notebooks/ folder, so the notebook finds its files as in
# a clone. In a clone of the book it does nothing (`make` installed the package).
import importlib.util, os, subprocess, sys

REPOSITORY, BRANCH = "https://github.com/shufflenet-book/shufflenet-v1-book", "main"
CLONE = os.path.abspath("shufflenet-v1-book")


def run_or_stop(command, what):
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-2000:], sep="\n")
        raise RuntimeError(f"{what} failed (its error is above). Check that the "
                           "notebook has internet access (on Kaggle: Settings > "
                           "Internet; on Colab, Runtime > Disconnect and delete "
                           "runtime starts afresh), then rerun this cell.")


# Alone: no clone around the notebook, and Colab, or a clone made by an earlier run of
# this cell, or no installed package.
if not os.path.isfile("../shufflenet/__init__.py") and (
        "google.colab" in sys.modules or os.path.isdir(CLONE)
        or importlib.util.find_spec("shufflenet") is None):
    # The book's tests point this at a local clone.
    source = os.environ.get("SHUFFLENET_BOOK_REPOSITORY", REPOSITORY)
    if not os.path.isdir(CLONE):
        run_or_stop(["git", "clone", "-q", "--depth", "1", "--branch", BRANCH, source,
                     CLONE], "cloning the book")
    run_or_stop([sys.executable, "-m", "pip", "install", "-q", CLONE],
                "installing the book's package")
    importlib.invalidate_caches()
    os.chdir(os.path.join(CLONE, "notebooks"))'''


def main() -> int:
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        if path.name.endswith(".zh.ipynb"):
            continue  # generated from the English by scripts/zh_edition.py build
        notebook = nbformat.read(path, as_version=4)
        cell = next(cell for cell in notebook.cells if cell.cell_type == "code")
        if cell.source != SETUP:
            cell.source = SETUP
            nbformat.write(notebook, path)
            print(f"updated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
