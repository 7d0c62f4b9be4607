"""Tests of shufflenet.bookkeeping through real runs: exact resume wherever Ctrl-C lands (RunState,
Checkpoint, DeferredInterrupt), and checkpoints of another run, device or precision refused in one line.
"""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from shufflenet import train as train_module
from shufflenet.bookkeeping import Checkpoint, CheckpointError, DeferredInterrupt, RunState
from shufflenet.runs import main
from shufflenet.train import Interrupted, autocast_dtype, train


def read_metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def without_seconds(rows):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def ctrl_c():
    """What pressing Ctrl-C does: the SIGINT signal, delivered to the main thread."""
    signal.raise_signal(signal.SIGINT)


@pytest.fixture
def python_sigint_handler():
    """Python's own Ctrl-C handler, as in an interactive start; whatever was there before comes back after.

    A process started with SIGINT ignored (``nohup make test &``, many job runners) has ``SIG_IGN`` here,
    and :class:`DeferredInterrupt` rightly puts that back: the tests below must not assume which it is.
    """
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


class InterruptAt:
    """A callback that presses Ctrl-C after a given step, keeping a copy of the last epoch's checkpoint."""

    def __init__(self, epoch, step, out):
        self.epoch, self.step, self.out = epoch, step, out

    def __call__(self, epoch, step):
        if (epoch, step) == (self.epoch, self.step):
            shutil.copy(self.out / "checkpoint.pt", self.out / "after_epoch_1.pt")
            ctrl_c()


def test_run_state_averages_the_loss_per_image_and_survives_a_checkpoint():
    run = RunState()
    run.add_step(torch.tensor(2.0), 32)
    run.add_step(torch.tensor(1.0), 16)                  # a smaller last batch counts less
    assert (run.epoch, run.step) == (0, 2)
    saved = RunState.from_state_dict(run.state_dict(), torch.device("cpu"))
    assert (saved.step, saved.loss_count, float(saved.loss_sum)) == (2, 48, 80.0)
    saved.epoch_seconds = 1.5
    row = saved.finish_epoch(0.75, lr=0.1)
    assert row == {"epoch": 1, "train_loss": round(80 / 48, 6), "test_acc": 0.75, "lr": 0.1, "seconds": 1.5}
    assert (saved.epoch, saved.step, saved.loss_count, saved.elapsed, saved.history) == (1, 0, 0, 1.5, [row])


def test_deferred_interrupt_waits_for_the_step_boundary_then_stops_at_once(python_sigint_handler):
    with DeferredInterrupt() as interrupt:
        assert not interrupt.requested
        ctrl_c()                                         # the first only asks
        assert interrupt.requested
        with pytest.raises(KeyboardInterrupt):
            ctrl_c()                                     # the second stops at once
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def _custom_handler(signum, frame):
    pass


@pytest.mark.parametrize("before", [signal.default_int_handler, signal.SIG_IGN, signal.SIG_DFL,
                                    _custom_handler], ids=["python", "ignored", "default", "custom"])
def test_deferred_interrupt_puts_back_whatever_handler_was_there(before):
    saved = signal.signal(signal.SIGINT, before)
    try:
        with DeferredInterrupt():
            assert signal.getsignal(signal.SIGINT) not in (before, saved)
        assert signal.getsignal(signal.SIGINT) == before
    finally:
        signal.signal(signal.SIGINT, saved)


@pytest.mark.parametrize("resume_from", ["end of epoch 1", "middle of epoch 2"])
def test_resume_gives_exactly_the_uninterrupted_run(tmp_path, resume_from, tiny_config):
    straight = tmp_path / "straight"
    train(tiny_config(straight))

    stopped = tmp_path / "stopped"
    with pytest.raises(Interrupted, match="checkpoint saved"):
        train(tiny_config(stopped), callback=InterruptAt(1, 1, stopped))
    if resume_from == "end of epoch 1":
        shutil.copy(stopped / "after_epoch_1.pt", stopped / "checkpoint.pt")
        assert torch.load(stopped / "checkpoint.pt", weights_only=True)["epoch"] == 1
    train(tiny_config(stopped), resume=True)

    assert without_seconds(read_metrics(stopped)) == without_seconds(read_metrics(straight))
    a = torch.load(straight / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(stopped / "checkpoint.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_other_options(tmp_path, tiny_config):
    train(tiny_config(tmp_path, epochs=1))
    with pytest.raises(CheckpointError, match=r"epochs=1 there, 2 now.*choose another --out"):
        train(tiny_config(tmp_path, epochs=2), resume=True)


def test_checkpoint_from_before_an_option_existed_resumes_with_its_default(tmp_path, tiny_config):
    train(tiny_config(tmp_path, epochs=1))
    path = tmp_path / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    del state["config"]["precision"]  # as written before --precision existed
    torch.save(state, path)
    assert train(tiny_config(tmp_path, epochs=1), resume=True)["epochs"] == 1
    with pytest.raises(CheckpointError,
                       match=r"precision fp32 there, bf16 now \(resume with --precision fp32\)"):
        train(tiny_config(tmp_path, epochs=1, precision="bf16"), resume=True)


def test_truncated_checkpoint_gives_one_line_error_and_is_left_alone(tmp_path, capsys, tiny_config, cli_args):
    train(tiny_config(tmp_path, epochs=1))
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:5000])
    before = path.read_bytes()
    assert main(cli_args(tmp_path, "--resume")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "Traceback" not in err
    assert path.read_bytes() == before


def test_a_checkpoint_from_another_device_or_precision_is_a_one_line_error(tmp_path, fake_gpu, tiny_config):
    train(tiny_config(tmp_path, epochs=1))
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert (state["device_type"], state["precision"]) == ("cpu", "fp32")
    gpu = fake_gpu((7, 5))
    on_a_t4 = Checkpoint(tmp_path / "checkpoint.pt", tiny_config(tmp_path, epochs=1, device="cuda"), gpu,
                         autocast_dtype(gpu), {})
    with pytest.raises(CheckpointError, match=r"device cpu there, cuda now \(resume with --device cpu\); "
                                              r"precision fp32 there, fp16 now") as error:
        on_a_t4.check_same_run(state)
    assert "\n" not in str(error.value)
    state["device_type"], state["precision"] = "cuda", "bf16"  # an A100's run continued on a T4
    with pytest.raises(CheckpointError,
                       match=r"precision bf16 there, fp16 now \(resume with --precision bf16\)"):
        on_a_t4.check_same_run(state)


def test_every_option_but_the_free_ones_is_checked_on_resume(tmp_path, tiny_config):
    train(tiny_config(tmp_path, epochs=1))
    with pytest.raises(CheckpointError, match="label_smoothing=0.1 there, 0.0 now"):
        train(tiny_config(tmp_path, epochs=1, label_smoothing=0.0), resume=True)
    # Where it writes, how it shows progress and how many threads it uses may change.
    assert train(tiny_config(tmp_path, epochs=1, threads=1, progress=True), resume=True)["epochs"] == 1


def interrupted_then_resumed(tiny_config, tmp_path, monkeypatch, press, **changes):
    """Train once straight, once with ``press(model)`` arranging a Ctrl-C, then resume; return both outs."""
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    train(tiny_config(straight, **changes))
    real_build = train_module.build_model

    def build_and_arm(*args):
        model = real_build(*args)
        press(model)
        return model

    monkeypatch.setattr(train_module, "build_model", build_and_arm)
    with pytest.raises(Interrupted, match="checkpoint saved"):
        train(tiny_config(stopped, **changes))
    monkeypatch.setattr(train_module, "build_model", real_build)
    train(tiny_config(stopped, **changes), resume=True)
    return straight, stopped


def assert_same_run(a, b):
    assert without_seconds(read_metrics(a)) == without_seconds(read_metrics(b))
    state_a = torch.load(a / "checkpoint.pt", weights_only=True)
    state_b = torch.load(b / "checkpoint.pt", weights_only=True)
    for part in ("model", "optimizer", "ema")[:3 if "ema" in state_a else 2]:
        flat_a, flat_b = (torch.nn.utils.parameters_to_vector(
            [v.float() for v in _tensors(s[part])]) for s in (state_a, state_b))
        assert torch.equal(flat_a, flat_b), part


def _tensors(tree):
    if isinstance(tree, torch.Tensor):
        yield tree.flatten()
    elif isinstance(tree, dict):
        for key in sorted(tree, key=str):
            yield from _tensors(tree[key])
    elif isinstance(tree, (list, tuple)):
        for item in tree:
            yield from _tensors(item)


def press_during_forward(calls_before):
    """Ctrl-C inside the forward pass of a training step, after the stem already updated its BatchNorm."""
    def arm(model):
        calls = []

        def hook(module, inputs, output):
            if module.training:
                calls.append(1)
                if len(calls) == calls_before + 1:
                    ctrl_c()
        model.stage3.register_forward_hook(hook)
    return arm


def test_ctrl_c_inside_the_forward_pass_resumes_exactly(tmp_path, monkeypatch, tiny_config):
    straight, stopped = interrupted_then_resumed(tiny_config, tmp_path, monkeypatch, press_during_forward(2))
    assert_same_run(straight, stopped)
    history = read_metrics(stopped)
    assert len(history) == 2


def test_ctrl_c_inside_optimizer_step_resumes_exactly(tmp_path, monkeypatch, tiny_config):
    real_step, calls = torch.optim.SGD.step, []

    def step_with_ctrl_c(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            ctrl_c()  # the update is half way: the handler only notes it, the step completes
        return real_step(self, *args, **kwargs)

    def arm(model):
        calls.clear()
        monkeypatch.setattr(torch.optim.SGD, "step", step_with_ctrl_c)

    straight, stopped = interrupted_then_resumed(tiny_config, tmp_path, monkeypatch, arm)
    assert_same_run(straight, stopped)


def test_ctrl_c_during_evaluation_resumes_exactly(tmp_path, monkeypatch, tiny_config):
    def arm(model):
        calls = []

        def hook(module, inputs, output):
            if not module.training:
                calls.append(1)
                if len(calls) == 2:  # the second epoch's evaluation
                    ctrl_c()
        model.stage4.register_forward_hook(hook)

    straight, stopped = interrupted_then_resumed(tiny_config, tmp_path, monkeypatch, arm)
    assert_same_run(straight, stopped)


def test_ctrl_c_with_a_moving_average_and_test_flips_resumes_exactly(tmp_path, monkeypatch, tiny_config):
    straight, stopped = interrupted_then_resumed(tiny_config, tmp_path, monkeypatch, press_during_forward(2),
                                                 ema=0.9, test_flip=True)
    assert "ema" in torch.load(stopped / "checkpoint.pt", weights_only=True)
    assert_same_run(straight, stopped)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_ctrl_c_in_mixed_precision_resumes_exactly(tmp_path, monkeypatch, tiny_config, precision):
    """The autocast and gradient-scaler paths of a GPU run, exercised on the CPU (fp16 uses the scaler)."""
    with pytest.warns(UserWarning) if precision == "bf16" and not train_module.native_bf16(
            torch.device("cpu")) else _no_warning():
        straight, stopped = interrupted_then_resumed(tiny_config, tmp_path, monkeypatch,
                                                     press_during_forward(1), precision=precision)
    assert_same_run(straight, stopped)
    scaler_state = torch.load(straight / "checkpoint.pt", weights_only=True)["scaler"]
    assert ("scale" in scaler_state) == (precision == "fp16")  # an enabled scaler saves its scale


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_second_ctrl_c_stops_at_once_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys,
                                                                      tiny_config, cli_args,
                                                                      python_sigint_handler):
    out = tmp_path / "run"
    train(tiny_config(out, epochs=1))
    saved = (out / "checkpoint.pt").read_bytes()

    def arm(model):
        def hook(module, inputs, output):
            if module.training:
                ctrl_c()
                ctrl_c()  # the second one raises KeyboardInterrupt right here
        model.stage2.register_forward_hook(hook)

    real_build = train_module.build_model
    monkeypatch.setattr(train_module, "build_model",
                        lambda *args: (lambda m: (arm(m), m)[1])(real_build(*args)))
    assert main(cli_args(tmp_path / "again")) == 130
    err = capsys.readouterr().err
    assert "stopped at once" in err and "Traceback" not in err
    assert not (tmp_path / "again" / "checkpoint.pt").exists()  # nothing half-done was saved
    assert (out / "checkpoint.pt").read_bytes() == saved
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C works as usual again


def test_ctrl_c_in_a_real_process_resumes_exactly(tmp_path):
    """The reproduction of the bug report: SIGINT to the command line as soon as epoch 1 is logged."""
    def command(out, *extra):
        return [sys.executable, "-m", "shufflenet.train", "--data", "synthetic", "--limit", "256",
                "--batch-size", "64", "--scale", "0.25", "--groups", "3", "--device", "cpu", "--threads", "1",
                "--no-progress", "--epochs", "3", "--out", str(out), *extra]

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    straight = tmp_path / "straight"
    subprocess.run(command(straight), check=True, capture_output=True, env=env)
    stopped = tmp_path / "stopped"
    process = subprocess.Popen(command(stopped), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env)
    for line in process.stdout:
        if line.startswith("epoch   1/3"):
            process.send_signal(signal.SIGINT)
            break
    _, err = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("the run finished before the signal arrived")  # a very fast machine
    assert process.returncode == 130 and "checkpoint saved" in err and "Traceback" not in err
    subprocess.run(command(stopped, "--resume"), check=True, capture_output=True, env=env)
    assert_same_run(straight, stopped)


def test_the_ctrl_c_tests_pass_when_started_with_sigint_ignored():
    """As ``nohup make test &`` or a job runner starts them: SIGINT ignored from the start (``SIG_IGN``,
    kept across exec). The tests of Python's handler and of DeferredInterrupt must set up what they
    assume themselves, and a Ctrl-C must still stop a training run at a step boundary."""
    def started_with_sigint_ignored(*args):  # ignore SIGINT, then exec: what a shell does for `cmd &`
        launcher = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")
        return subprocess.run([sys.executable, "-c", launcher, *args], capture_output=True, text=True,
                              timeout=300)

    check = "import signal; assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN"
    assert started_with_sigint_ignored("-c", check).returncode == 0  # the precondition holds
    done = started_with_sigint_ignored("-m", "pytest", __file__, "-q", "-p", "no:cacheprovider",
                                       "-k", "deferred_interrupt or second_ctrl_c or inside_the_forward_pass")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and " failed" not in done.stdout
