"""Re-execute notebooks in place, top to bottom in a fresh kernel, as `make notebooks` does.

    python scripts/execute_notebooks.py notebooks/02_channel_shuffle.ipynb [...]

Each notebook runs in its own folder (so relative paths such as ``results/...`` work) and is saved
without nbclient's per-cell timestamps, and with each cell's consecutive prints joined into one output
(how a kernel splits them depends on timing): a cell whose output did not change is then byte for byte
the same, so a diff (and a merge) shows only what a change really changed.
"""

import sys
from pathlib import Path

import nbclient
import nbformat


def execute(path: Path, timeout: int = 1200) -> None:
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
    client = nbclient.NotebookClient(notebook, timeout=timeout, record_timing=False,
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = join_streams(cell.outputs)
    nbformat.write(notebook, path)


def join_streams(outputs: list) -> list:
    """Consecutive outputs of the same stream (stdout or stderr) as one."""
    joined = []
    for output in outputs:
        if (output.get("output_type") == "stream" and joined
                and joined[-1].get("output_type") == "stream" and joined[-1]["name"] == output["name"]):
            joined[-1]["text"] += output["text"]
        else:
            joined.append(output)
    return joined


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for name in sys.argv[1:]:
        print(f"executing {name}", flush=True)
        execute(Path(name))
