"""The bookkeeping of a training run, kept out of the recipe's way (``train.py``).

* :class:`RunState`: where a run is (epoch, step), what it has measured so far and how long it took;
* :class:`Checkpoint`: everything needed to continue a run exactly, written atomically, read safely
  (``weights_only=True``), and refused in one line when it belongs to another run;
* :class:`DeferredInterrupt`: Ctrl-C stops the run at the next step boundary, so a checkpoint never
  holds half a step (a forward pass that already moved BatchNorm's running statistics, or an optimiser
  update applied to some parameters only). A second Ctrl-C stops at once.

In a run of several processes (``torchrun``) rank 0 alone writes the checkpoint, every process reads it,
and the number of processes is part of the run: a checkpoint resumes only with as many.
"""

from __future__ import annotations

import random
import signal
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from . import distributed
from .runtime import atomic_save

PRECISION_NAMES = {None: "fp32", torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}

# Options that may change between a run and its resumption: where it writes, how it shows progress,
# how the machine runs it. Every other option must be the same. The device type and the precision are
# compared as resolved ("auto" may mean fp16 on one GPU and bf16 on another).
FREE_ON_RESUME = ("out", "progress", "threads", "num_workers", "root", "compile", "compile_mode", "device",
                  "precision")


class TrainingError(Exception):
    """A problem the command line reports in one line, without a traceback."""


class CheckpointError(TrainingError):
    pass


@dataclass
class RunState:
    """Where a run is, and what it has measured. ``loss_sum`` stays on the device: no GPU sync per step."""

    epoch: int = 0                # epochs finished
    step: int = 0                 # steps finished in the current epoch
    history: list = field(default_factory=list)   # one row per finished epoch (``metrics.jsonl``)
    loss_sum: torch.Tensor | float = 0.0
    loss_count: int = 0
    epoch_seconds: float = 0.0    # time spent in the current epoch so far (across interruptions)
    elapsed: float = 0.0          # time of all finished epochs

    def add_step(self, loss: torch.Tensor, batch_size: int) -> None:
        self.loss_sum = self.loss_sum + loss.detach().float() * batch_size
        self.loss_count += batch_size
        self.step += 1

    def finish_epoch(self, test_acc: float | list, lr: float, **more: float | list) -> dict:
        """The epoch's row of ``metrics.jsonl``; for copies trained as one, lists of each copy's numbers."""
        train_loss = (torch.as_tensor(self.loss_sum) / self.loss_count).tolist()
        row = {"epoch": self.epoch + 1, "train_loss": _rounded(train_loss), "test_acc": _rounded(test_acc),
               **{k: _rounded(v) for k, v in more.items()}, "lr": lr, "seconds": round(self.epoch_seconds, 3)}
        self.history.append(row)
        self.elapsed += self.epoch_seconds
        self.epoch, self.step, self.epoch_seconds = self.epoch + 1, 0, 0.0
        self.loss_sum, self.loss_count = 0.0, 0
        return row

    def state_dict(self) -> dict:
        state = asdict(self)
        state["loss_sum"] = torch.as_tensor(self.loss_sum).detach().cpu()
        return state

    @classmethod
    def from_state_dict(cls, state: dict, device: torch.device) -> RunState:
        run = cls(**{name: state[name] for name in cls.__dataclass_fields__})
        run.history = list(run.history)
        run.loss_sum = torch.as_tensor(run.loss_sum).to(device)
        return run


def _rounded(value: float | list) -> float | list:
    return [round(v, 6) for v in value] if isinstance(value, list) else round(value, 6)


def _rng_state(device: torch.device) -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else []}


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if device.type == "cuda" and state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def read_checkpoint(path: Path) -> dict:
    """Load a checkpoint safely (``weights_only=True``); any problem becomes a one-line error."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        missing = {"model", "optimizer", "scheduler", "epoch", "config", "history"} - set(state)
        if missing:
            raise ValueError(f"missing entries {sorted(missing)}")
    except Exception as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        reason = reason.split(". ")[0][:200]  # torch's own messages go on for several sentences
        raise CheckpointError(f"cannot read checkpoint {path} (truncated or corrupted?): {reason}") from None
    return state


class Checkpoint:
    """``OUT/checkpoint.pt``: the model, optimiser, schedule and gradient scaler, the :class:`RunState`,
    the random generators, the options, the device type and precision the run resolved and its number
    of processes. Rank 0 writes it; the others wait for the file before they go on."""

    def __init__(self, path: Path, config, device: torch.device, dtype, parts: dict, world_size: int = 1):
        self.path, self.config, self.device, self.parts = Path(path), config, device, parts
        self.precision, self.world_size = PRECISION_NAMES[dtype], world_size

    def save(self, run: RunState) -> None:
        if distributed.is_main():
            atomic_save({**{name: part.state_dict() for name, part in self.parts.items()},
                         **run.state_dict(), "rng": _rng_state(self.device), "config": asdict(self.config),
                         "device_type": self.device.type, "precision": self.precision,
                         "world_size": self.world_size}, self.path)
        distributed.barrier()

    def restore(self) -> RunState:
        if not self.path.is_file():
            raise CheckpointError(f"no checkpoint to resume at {self.path}")
        state = read_checkpoint(self.path)
        self.check_same_run(state)
        for name, part in self.parts.items():
            part.load_state_dict(state[name])
        _set_rng_state(state["rng"], self.device)
        return RunState.from_state_dict(state, self.device)

    def check_same_run(self, state: dict) -> None:
        """Every option that changes the result must be the same, and so must the resolved device type
        and precision: a run continued in another precision or on another device would not be the run
        it started as, so that is a clear error instead."""
        current, defaults = asdict(self.config), asdict(type(self.config)())
        # An option missing from an older checkpoint did not exist yet: that run had its default
        # (or, for ``mixing``, what the older ``shuffle`` flag said).
        defaults["mixing"] = "shuffle" if state["config"].get("shuffle", True) else "none"
        saved = {key: state["config"].get(key, defaults[key]) for key in current}
        differences = [f"{key}={saved[key]!r} there, {current[key]!r} now" for key in current
                       if key not in FREE_ON_RESUME and saved[key] != current[key]]
        # Checkpoints from before these were recorded were made on a CPU, where "auto" meant fp32.
        device_type = state.get("device_type", "cpu")
        precision = state.get("precision", {"auto": "fp32"}.get(saved["precision"], saved["precision"]))
        if device_type != self.device.type:
            differences.append(f"device {device_type} there, {self.device.type} now (resume with "
                               f"--device {device_type})")
        if precision != self.precision:
            differences.append(f"precision {precision} there, {self.precision} now (resume with "
                               f"--precision {precision})")
        processes = state.get("world_size", 1)
        if processes != self.world_size:  # each process's BatchNorm sees another share of the batch
            differences.append(f"world size {processes} there, {self.world_size} now (resume with "
                               f"{processes} process{'es' if processes > 1 else ''})")
        if differences:
            raise CheckpointError(f"checkpoint {self.path} belongs to another run "
                                  f"({'; '.join(differences)}); choose another --out to start afresh")


class DeferredInterrupt:
    """Inside ``with``, the first Ctrl-C (SIGINT) only sets :attr:`requested`, and the training loop stops
    at the next step boundary; a second one raises :class:`KeyboardInterrupt` at once, as usual.

    Outside the main thread (where Python delivers no signals) it does nothing.
    """

    def __init__(self):
        self.requested = False
        self._installed, self._previous = False, None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: stopping after this step to save a checkpoint (press Ctrl-C again to stop at "
              "once, without saving)", file=sys.stderr, flush=True)

    def __enter__(self) -> DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
            self._installed = True
        return self

    def __exit__(self, *exc) -> None:
        if self._installed:  # a handler installed outside Python reads as None: put Python's back
            previous = signal.default_int_handler if self._previous is None else self._previous
            signal.signal(signal.SIGINT, previous)  # SIG_DFL (0) and SIG_IGN too, as they were
