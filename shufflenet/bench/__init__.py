"""Is ShuffleNet fast? The benchmarks of the book's Chapter 6, next to the model's multiply-adds.

One module per experiment, each a function that takes keyword arguments and returns rows (dicts):

* :func:`run_models` (``models.py``): latency and throughput of ShuffleNet V1 and torchvision networks
  in eager, ``channels_last`` and compiled forms (``forms.py``);
* :func:`run_shuffle` (``shuffle.py``): the channel shuffle against a plain copy of the same tensor;
* :func:`run_g2` (``g2.py``): ShuffleNet V2's guideline G2, group convolutions at equal multiply-adds;
* :func:`run_profile` (``profile.py``): where the time of a forward pass goes, by kind of operator;
* :func:`run_pipeline` (``pipeline.py``): images/s of Chapter 5's two training data pipelines;
* :func:`run_step` (``step.py``): the training recipe's step in each form, and whether Python's issuing
  of kernels or the device limits it.

All of them time with ``timing.py``: warm-up calls, then interleaved rounds, then medians and
interquartile ranges. ``python -m shufflenet.bench`` (``__main__.py``) is the command line: it parses
the options, records the machine, prints a table and writes ``NAME.json`` and ``NAME.csv``.
"""

from .forms import FORMS, MODELS, build_model, export_and_check, prepare
from .g2 import g2_channels, g2_network, run_g2
from .models import run_models
from .pipeline import run_pipeline
from .profile import profile_model, run_profile
from .shuffle import run_shuffle
from .step import STEP_FORMS, run_step
from .timing import summarize, time_interleaved

__all__ = [
    "FORMS", "MODELS", "STEP_FORMS", "build_model", "export_and_check", "g2_channels", "g2_network",
    "prepare", "profile_model", "run_g2", "run_models", "run_pipeline", "run_profile", "run_shuffle",
    "run_step", "summarize", "time_interleaved",
]
