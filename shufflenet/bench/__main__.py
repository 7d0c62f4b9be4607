"""``python -m shufflenet.bench [EXPERIMENT] [options]``: run one experiment, print and save its rows.

This is the only module of the benchmarks that parses arguments, records the machine, prints and
writes files. Every option's default is the experiment function's own keyword default.
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import sys

import torch

from .._checks import fraction_arg, positive_float_arg, positive_int_arg
from ..runtime import PRECISIONS
from .forms import FORMS, LAYOUTS, MODELS
from .g2 import run_g2
from .models import run_models
from .pipeline import run_pipeline
from .profile import run_profile
from .report import COLUMNS, format_table, load_caveat, machine_info, write_results
from .shuffle import keep_freed_memory, run_shuffle
from .step import STEP_FORMS, run_step
from .timing import CLOCKS

EXPERIMENTS = {
    "models": (run_models, "latency (batch 1) and throughput of ShuffleNet V1 and torchvision networks"),
    "shuffle": (run_shuffle, "channel_shuffle against clone() (one copy) and nn.ChannelShuffle"),
    "g2": (run_g2, "ShuffleNet V2's guideline G2: 1x1 group convolutions at equal multiply-adds"),
    "profile": (run_profile, "where the time of a forward pass goes, by kind of operator"),
    "pipeline": (run_pipeline, "images/s of the fast data path against the DataLoader (Chapter 5)"),
    "step": (run_step, "the training recipe's step in each form: its time, and whether Python's "
                       "issuing of kernels or the device is the limit"),
}
DEFAULT_EXPERIMENT = "models"
# --quick: a few seconds' run, for smoke tests (on a GPU too); options given on the line still win.
QUICK = {
    "models": {"models": ["shufflenet_v1_g3_x0_5", "shufflenet_v1_g8_x0_5", "mobilenet_v3_small"],
               "forms": ["eager", "channels_last"], "batch": 2, "size": 64, "repeats": 3, "warmup": 1},
    "shuffle": {"shapes": [(24, 8, 8)], "batches": [1], "repeats": 3, "warmup": 1, "min_block_ms": 0.2},
    "g2": {"base_channels": [16], "layouts": ["nchw"], "size": 8, "repeats": 3, "warmup": 1,
           "min_block_ms": 0.2},
    "profile": {"forms": ["eager"], "size": 64, "iterations": 2, "rounds": 1, "warmup": 1},
    "pipeline": {"batch": 16, "train_steps": 1, "data_steps": 2, "repeats": 1, "warmup": 1},
    "step": {"scale": 0.5, "batch": 8, "forms": ["eager", "channels_last"], "steps": 2, "repeats": 2,
             "warmup": 1},
}
HELP = {
    "models": "networks to measure", "model": "network to profile", "forms": "forms to run in",
    "compile_models": "networks to run in the compiled forms, or 'all' (tens of seconds each)",
    "devices": "devices to measure on", "device": "device to train on (auto: the GPU if there is one)",
    "batch": "batch size", "size": "image (or feature map) height and width",
    "repeats": "timed rounds", "warmup": "untimed calls first", "seed": "seed of weights and inputs",
    "clock": "wall: elapsed time; cpu: CPU time of this process, which leaves out waits for a core "
             "on a busy machine (needs --threads 1 and the CPU)",
    "shapes": "tensor shapes CxHxW without the batch", "batches": "batch sizes",
    "layouts": "memory layouts", "groups": "groups", "min_block_ms": "shortest timed block, in ms",
    "base_channels": "channels at g = 1, widened by about sqrt(g) for the others",
    "depth": "stacked convolutions", "iterations": "profiled forward passes per round",
    "rounds": "interleaved rounds, the fastest kept",
    "data": "cifar10, synthetic or an ImageFolder directory (train/<class>/*)",
    "scale": "ShuffleNet scale", "train_steps": "timed training steps",
    "data_steps": "timed batches of the pipeline alone", "num_workers": "DataLoader worker processes",
    "ema": "decay of the moving average of the weights updated after each step (0: none)",
    "steps": "timed steps per round",
    "copies": "numbers of copies of the network trained as one (stacked; each its own weights and "
              "batch)",
    "precision": "the training step's autocast precision, as the trainer's --precision (auto: bf16 "
                 "where native on a GPU, else fp16; fp32 on a CPU)",
}
CHOICES = {"models": list(MODELS), "model": list(MODELS), "compile_models": [*MODELS, "all"],
           "forms": list(FORMS), "layouts": list(LAYOUTS), "clock": list(CLOCKS),
           "devices": ["cpu", "cuda"], "device": ["auto", "cpu", "cuda"], "precision": list(PRECISIONS)}
CHOICES_OF = {"step": {"forms": list(STEP_FORMS)}}  # where an experiment's choices differ from these
ALIASES = {"devices": ["--device"], "device": ["--devices"]}
TYPES = {"ema": fraction_arg}  # where a default's type is not the option's (0 turns the average off)


def shape_chw(text: str) -> tuple:
    try:
        shape = tuple(int(p) for p in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected a shape CxHxW such as 60x28x28, got {text!r}")
    return shape


def _show(value) -> str:
    if isinstance(value, (tuple, list)):
        return " ".join("x".join(map(str, v)) if isinstance(v, tuple) else str(v) for v in value)
    return str(value)


def _add_option(parser, name: str, default, experiment: str = "") -> None:
    """An option for keyword ``name`` of an experiment; its type and arity follow the default's."""
    many = isinstance(default, (tuple, list))
    sample = default[0] if many else default
    choices = CHOICES_OF.get(experiment, {}).get(name, CHOICES.get(name))
    shown = "all" if choices and list(default) == choices else _show(default)
    kwargs = {"default": None, "help": f"{HELP[name]} (default: {shown})"}
    if many:
        kwargs["nargs"] = "+"
    if choices:
        kwargs["choices"] = choices
        if len(choices) > 6:
            kwargs.update(metavar="MODEL", help=kwargs["help"] + "; one of " + ", ".join(choices))
    elif name in TYPES:
        kwargs["type"] = TYPES[name]
    elif isinstance(sample, tuple):
        kwargs.update(type=shape_chw, metavar="CxHxW")
    elif isinstance(sample, int):
        kwargs["type"] = int if name in ("seed", "num_workers") else positive_int_arg
    elif isinstance(sample, float):
        kwargs["type"] = positive_float_arg
    parser.add_argument("--" + name.replace("_", "-"), *ALIASES.get(name, []), dest=name, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m shufflenet.bench", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"Measure how fast ShuffleNet runs (the book's Chapter 6). Without an experiment, "
                    f"runs '{DEFAULT_EXPERIMENT}'. Options: python -m shufflenet.bench EXPERIMENT --help",
        epilog="examples:\n"
               "  python -m shufflenet.bench --quick                     # a few seconds\n"
               "  python -m shufflenet.bench --quick --device cuda       # the same on a GPU\n"
               "  python -m shufflenet.bench models --out results        # results/models.json, .csv\n"
               "  python -m shufflenet.bench shuffle --threads 1 --clock cpu   # on a shared machine")
    sub = parser.add_subparsers(dest="experiment", metavar="EXPERIMENT")
    for name, (run, text) in EXPERIMENTS.items():
        child = sub.add_parser(name, help=text, description=text)
        for key, parameter in inspect.signature(run).parameters.items():
            _add_option(child, key, parameter.default, name)
        child.add_argument("--threads", type=positive_int_arg, help="torch CPU threads for the run "
                           "(default: torch's own choice, usually one per core)")
        child.add_argument("--quick", action="store_true", help="a few seconds' run, for smoke tests")
        child.add_argument("--out", metavar="DIR", help="write DIR/NAME.json and DIR/NAME.csv")
        child.add_argument("--name", help="file name stem for --out (default: the experiment's name)")
    return parser


def parse_args(argv=None) -> tuple:
    """(experiment, its keyword arguments, the parsed options); the default experiment is inserted
    when the line starts with an option."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv.insert(0, DEFAULT_EXPERIMENT)
    parser = build_parser()
    args = parser.parse_args(argv)
    run, _ = EXPERIMENTS[args.experiment]
    kwargs = {key: getattr(args, key) for key in inspect.signature(run).parameters
              if getattr(args, key) is not None}
    if args.quick:
        kwargs = {**QUICK[args.experiment], **kwargs}
    devices = kwargs.get("devices", [kwargs.get("device", "cpu")])
    if "cuda" in devices and not torch.cuda.is_available():
        parser.error("--devices cuda: CUDA is not available on this machine")
    if kwargs.get("clock") == "cpu" and (args.threads != 1 or "cuda" in devices):
        parser.error("--clock cpu adds up the CPU time of all threads and misses GPU time: "
                     "use it with --threads 1 --devices cpu")
    args.argv = argv
    return args.experiment, kwargs, args


def main(argv=None) -> int:
    name, kwargs, args = parse_args(argv)
    run, _ = EXPERIMENTS[name]
    settings = {key: p.default for key, p in inspect.signature(run).parameters.items()}
    settings.update(kwargs)
    threads = torch.get_num_threads()
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        settings["threads"] = torch.get_num_threads()
        if name == "shuffle":  # for the whole process: see keep_freed_memory
            settings["freed_memory_kept_for_reuse"] = keep_freed_memory()
        before = machine_info()
        rows = run(**kwargs)
        after = machine_info()
    finally:
        torch.set_num_threads(threads)
    payload = {
        "benchmark": name,
        "command": "python -m shufflenet.bench " + " ".join(args.argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": before,
        "load_average_1min_after": after.get("load_average_1min"),
        "caveat": load_caveat(before, after, settings.get("clock", "wall")),
        "settings": settings,
        "results": rows,
    }
    print(f"# {name}: {before['cpu_model']}, {before['cpu_count']} cores, {settings['threads']} torch "
          f"threads, torch {before['torch']}, GPU: {before['cuda_device']}")
    print(format_table(rows, COLUMNS[name]))
    if payload["caveat"]:
        print("# caveat:", payload["caveat"])
    if args.out:
        for path in write_results(args.out, args.name or name, payload):
            print(f"# wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
