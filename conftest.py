"""Root pytest set-up, for `pytest tests` and `pytest --nbval notebooks` alike.

The test suite stays CPU-sized and offline on a machine with a GPU: a notebook may take its full GPU
configuration only when SHUFFLENET_FULL_RUN is set to something other than "0" (an explicit opt-in).
Notebook kernels started by nbval or nbclient inherit this environment.
"""

import os

os.environ.setdefault("SHUFFLENET_FULL_RUN", "0")

# nbval runs the English notebooks only: a Chinese notebook (notebooks/*.zh.ipynb, written by
# scripts/zh_edition.py) has the English code cells and outputs by construction, which
# tests/test_zh_edition.py checks without executing anything.
collect_ignore_glob = ["*.zh.ipynb", "**/*.zh.ipynb"]
