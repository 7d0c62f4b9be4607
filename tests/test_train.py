"""Tests of shufflenet.train: outputs, exact resume wherever Ctrl-C lands, precision, clean one-line errors.

Tiny synthetic runs on the CPU.
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
from shufflenet.train import (CheckpointError, DivergedError, Interrupted, TrainConfig, autocast_dtype,
                              confusion_matrix, main, parameter_groups, train)
from shufflenet.unit import ShuffleUnit
from shufflenet import shufflenet_v1


def tiny_config(out, **changes) -> TrainConfig:
    settings = dict(data="synthetic", scale=0.25, limit=64, batch_size=32, epochs=2, device="cpu",
                    out=str(out), progress=False)
    settings.update(changes)
    return TrainConfig(**settings)


def read_metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def without_seconds(rows):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def test_run_writes_metrics_checkpoint_and_summary(tmp_path):
    summary = train(tiny_config(tmp_path, epochs=1))
    rows = read_metrics(tmp_path)
    assert len(rows) == 1 and set(rows[0]) == {"epoch", "train_loss", "test_acc", "lr", "seconds"}
    assert rows[0]["epoch"] == 1 and 0 <= rows[0]["test_acc"] <= 1 and rows[0]["train_loss"] > 0
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "epoch", "rng", "config"} <= set(state)
    assert state["epoch"] == 1 and isinstance(state["rng"]["torch"], torch.Tensor)
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written == summary
    for key in ("test_acc", "epochs", "seconds", "device", "data", "groups", "scale", "limit", "threads"):
        assert key in written
    assert written["data"] == "synthetic" and written["groups"] == 3 and written["scale"] == 0.25
    assert written["test_acc"] == rows[-1]["test_acc"] and written["config"]["limit"] == 64
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temporary files behind


def ctrl_c():
    """What pressing Ctrl-C does: the SIGINT signal, delivered to the main thread."""
    signal.raise_signal(signal.SIGINT)


class InterruptAt:
    """A callback that presses Ctrl-C after a given step, keeping a copy of the last epoch's checkpoint."""

    def __init__(self, epoch, step, out):
        self.epoch, self.step, self.out = epoch, step, out

    def __call__(self, epoch, step):
        if (epoch, step) == (self.epoch, self.step):
            shutil.copy(self.out / "checkpoint.pt", self.out / "after_epoch_1.pt")
            ctrl_c()


@pytest.mark.parametrize("resume_from", ["end of epoch 1", "middle of epoch 2"])
def test_resume_gives_exactly_the_uninterrupted_run(tmp_path, resume_from):
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


def test_autocast_dtype_choices():
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu) is None and autocast_dtype(cpu, "fp32") is None
    assert autocast_dtype(cpu, "bf16") == torch.bfloat16 and autocast_dtype(cpu, "fp16") == torch.float16
    with pytest.raises(ValueError, match=r"precision must be one of .*'bf16'.*got 'half'"):
        autocast_dtype(cpu, "half")


def test_export_writes_the_results_folder_of_a_finished_run(tmp_path, capsys):
    run, dest = tmp_path / "run", tmp_path / "results"
    args = ["--data", "synthetic", "--scale", "0.25", "--limit", "64", "--batch-size", "32", "--epochs", "1",
            "--device", "cpu", "--out", str(run), "--no-progress"]
    assert main(args) == 0
    assert main(args + ["--resume", "--export", str(dest)]) == 0  # a finished run: nothing to train
    assert sorted(p.name for p in dest.iterdir()) == ["confusion.json", "metrics.jsonl", "model.pt",
                                                      "predictions.pt", "summary.json"]
    summary = json.loads((dest / "summary.json").read_text())
    confusion = json.loads((dest / "confusion.json").read_text())
    matrix = torch.tensor(confusion["matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == confusion["test_images"] == summary["test_images"]
    assert confusion["accuracy"] == summary["test_acc"] == round(matrix.diag().sum().item() / matrix.sum().item(), 6)
    model = shufflenet_v1(3, 0.25, num_classes=10, small_input=True)
    model.load_state_dict(torch.load(dest / "model.pt", weights_only=True))
    predicted = torch.load(dest / "predictions.pt", weights_only=True)
    assert predicted["predictions"].dtype == predicted["labels"].dtype == torch.uint8
    correct = (predicted["predictions"] == predicted["labels"]).sum().item()
    assert len(predicted["labels"]) == summary["test_images"] and correct == matrix.diag().sum().item()


def test_export_of_an_unfinished_run_is_a_clear_error(tmp_path):
    with pytest.raises(train_module.TrainingError, match="no finished run"):
        train_module.export_run(tiny_config(tmp_path), tmp_path / "results")


def test_resume_refuses_other_options(tmp_path):
    train(tiny_config(tmp_path, epochs=1))
    with pytest.raises(CheckpointError, match=r"epochs=1 there, 2 now.*choose another --out"):
        train(tiny_config(tmp_path, epochs=2), resume=True)


def test_checkpoint_from_before_an_option_existed_resumes_with_its_default(tmp_path):
    train(tiny_config(tmp_path, epochs=1))
    path = tmp_path / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    del state["config"]["precision"]  # as written before --precision existed
    torch.save(state, path)
    assert train(tiny_config(tmp_path, epochs=1), resume=True)["epochs"] == 1
    with pytest.raises(CheckpointError, match=r"precision fp32 there, bf16 now \(resume with --precision fp32\)"):
        train(tiny_config(tmp_path, epochs=1, precision="bf16"), resume=True)


def test_truncated_checkpoint_gives_one_line_error_and_is_left_alone(tmp_path, capsys):
    train(tiny_config(tmp_path, epochs=1))
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:5000])
    before = path.read_bytes()
    args = ["--data", "synthetic", "--scale", "0.25", "--limit", "64", "--batch-size", "32", "--epochs", "1",
            "--device", "cpu", "--out", str(tmp_path), "--resume", "--no-progress"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "Traceback" not in err
    assert path.read_bytes() == before


@pytest.mark.parametrize("args, argument", [
    (["--epochs", "0"], "--epochs"),
    (["--data", "/no/such/folder"], "--data"),
    (["--groups", "5"], "--groups"),
    (["--precision", "half"], "--precision"),
])
def test_bad_arguments_are_argparse_errors(tmp_path, capsys, args, argument):
    with pytest.raises(SystemExit) as exit_info:
        main(args + ["--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert f"argument {argument}" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_an_argparse_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--data", "synthetic", "--device", "cuda", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --device" in err and "CUDA is not available" in err


def test_existing_checkpoint_needs_resume(tmp_path, capsys):
    train(tiny_config(tmp_path, epochs=1))
    with pytest.raises(SystemExit) as exit_info:
        main(["--data", "synthetic", "--out", str(tmp_path)])
    assert exit_info.value.code == 2 and "--resume" in capsys.readouterr().err


def test_nan_loss_stops_with_a_clear_message(tmp_path, monkeypatch, capsys):
    class NaNLoss(torch.nn.CrossEntropyLoss):
        def forward(self, logits, labels):
            return super().forward(logits, labels) * float("nan")

    monkeypatch.setattr(train_module.nn, "CrossEntropyLoss", NaNLoss)
    with pytest.raises(DivergedError, match="loss became nan at epoch 1, step 2"):
        train(tiny_config(tmp_path / "direct"))
    assert main(["--data", "synthetic", "--scale", "0.25", "--limit", "64", "--batch-size", "32",
                 "--device", "cpu", "--out", str(tmp_path / "cli"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "diverged" in err


def test_cli_run_and_finished_resume(tmp_path, capsys):
    args = ["--data", "synthetic", "--scale", "0.25", "--groups", "8", "--no-shuffle", "--limit", "64",
            "--batch-size", "32", "--epochs", "1", "--device", "cpu", "--out", str(tmp_path), "--no-progress"]
    assert main(args) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["groups"] == 8 and summary["shuffle"] is False and summary["mixing"] == "none"
    assert main(args + ["--resume"]) == 0  # nothing left to train: the summary is simply written again
    assert "done: test accuracy" in capsys.readouterr().out


def test_dataloader_pipeline_and_image_folder(tmp_path):
    from PIL import Image

    for split, count in (("train", 8), ("test", 4)):
        for label, name in enumerate(("cat", "dog")):
            (tmp_path / "tiny" / split / name).mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (32, 32), (200 * label, 50, 50 + i)).save(tmp_path / "tiny" / split / name / f"{i}.png")
    summary = train(tiny_config(tmp_path / "run", data=str(tmp_path / "tiny"), limit=None, batch_size=4,
                                epochs=1, pipeline="dataloader", num_workers=0))
    assert summary["data"] == "tiny" and summary["train_images"] == 16 and summary["test_images"] == 8


def test_no_weight_decay_on_batchnorm_and_biases():
    model = shufflenet_v1(3, 0.25, num_classes=10, small_input=True)
    decay, no_decay = parameter_groups(model, 5e-4)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0
    assert all(p.ndim == 4 for p in decay["params"][:-1]) and decay["params"][-1].ndim == 2
    bn_and_bias = sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)
                      for p in m.parameters()) + model.classifier.bias.numel()
    assert sum(p.numel() for p in no_decay["params"]) == bn_and_bias


def test_confusion_matrix():
    matrix = confusion_matrix(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), 3)
    assert matrix.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


# --- Ctrl-C wherever it lands: the run stops at the next step boundary and resumes exactly ---------------

def interrupted_then_resumed(tmp_path, monkeypatch, press, **changes):
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
    for part in ("model", "optimizer"):
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


def test_ctrl_c_inside_the_forward_pass_resumes_exactly(tmp_path, monkeypatch):
    straight, stopped = interrupted_then_resumed(tmp_path, monkeypatch, press_during_forward(2))
    assert_same_run(straight, stopped)
    history = read_metrics(stopped)
    assert len(history) == 2


def test_ctrl_c_inside_optimizer_step_resumes_exactly(tmp_path, monkeypatch):
    real_step, calls = torch.optim.SGD.step, []

    def step_with_ctrl_c(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            ctrl_c()  # the update is half way: the handler only notes it, the step completes
        return real_step(self, *args, **kwargs)

    def arm(model):
        calls.clear()
        monkeypatch.setattr(torch.optim.SGD, "step", step_with_ctrl_c)

    straight, stopped = interrupted_then_resumed(tmp_path, monkeypatch, arm)
    assert_same_run(straight, stopped)


def test_ctrl_c_during_evaluation_resumes_exactly(tmp_path, monkeypatch):
    def arm(model):
        calls = []

        def hook(module, inputs, output):
            if not module.training:
                calls.append(1)
                if len(calls) == 2:  # the second epoch's evaluation
                    ctrl_c()
        model.stage4.register_forward_hook(hook)

    straight, stopped = interrupted_then_resumed(tmp_path, monkeypatch, arm)
    assert_same_run(straight, stopped)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_ctrl_c_in_mixed_precision_resumes_exactly(tmp_path, monkeypatch, precision):
    """The autocast and gradient-scaler paths of a GPU run, exercised on the CPU (fp16 uses the scaler)."""
    with pytest.warns(UserWarning) if precision == "bf16" and not train_module.native_bf16(
            torch.device("cpu")) else _no_warning():
        straight, stopped = interrupted_then_resumed(tmp_path, monkeypatch, press_during_forward(1),
                                                     precision=precision)
    assert_same_run(straight, stopped)
    scaler_state = torch.load(straight / "checkpoint.pt", weights_only=True)["scaler"]
    assert ("scale" in scaler_state) == (precision == "fp16")  # an enabled scaler saves its scale


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_second_ctrl_c_stops_at_once_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
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
    monkeypatch.setattr(train_module, "build_model", lambda *args: (lambda m: (arm(m), m)[1])(real_build(*args)))
    args = ["--data", "synthetic", "--scale", "0.25", "--limit", "64", "--batch-size", "32", "--epochs", "1",
            "--device", "cpu", "--out", str(tmp_path / "again"), "--no-progress"]
    assert main(args) == 130
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


def test_the_first_epoch_projects_the_time_of_the_rest(tmp_path, capsys):
    train(tiny_config(tmp_path, epochs=3))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("epoch   1/3") and lines[1].startswith("projected: about")
    assert "remaining 2 epochs" in lines[1] and not any(line.startswith("projected") for line in lines[2:])


# --- precision by the device's abilities ------------------------------------------------------------------

@pytest.fixture
def fake_gpu(monkeypatch):
    """Stand in a GPU of a given compute capability: a T4 is (7, 5), an A100 (8, 0), an H100 (9, 0)."""
    def install(capability):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
        return torch.device("cuda")
    return install


def test_auto_precision_on_a_t4_is_fp16_with_a_gradient_scaler(fake_gpu):
    t4 = fake_gpu((7, 5))
    assert not train_module.native_bf16(t4)
    assert autocast_dtype(t4) is torch.float16 and autocast_dtype(t4, "fp16") is torch.float16
    with pytest.warns(UserWarning, match="no native bfloat16"):
        assert autocast_dtype(t4, "bf16") is torch.bfloat16  # asked for explicitly: it warns, and obeys


@pytest.mark.parametrize("capability", [(8, 0), (8, 9), (9, 0)])
def test_auto_precision_on_an_a100_or_newer_is_bf16(fake_gpu, capability, recwarn):
    gpu = fake_gpu(capability)
    assert autocast_dtype(gpu) is torch.bfloat16 and autocast_dtype(gpu, "bf16") is torch.bfloat16
    assert not recwarn.list


@pytest.mark.parametrize("flags, native", [("fpu avx2 avx512f", False), ("avx512f avx512_bf16", True),
                                           ("amx_bf16 amx_tile", True)])
def test_cpu_bf16_is_native_only_with_avx512_bf16_or_amx(monkeypatch, tmp_path, flags, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: real_open(
        cpuinfo if path == "/proc/cpuinfo" else path, *a, **k))
    cpu = torch.device("cpu")
    assert train_module.native_bf16(cpu) is native
    assert autocast_dtype(cpu) is None  # auto on a CPU: fp32 either way
    if native:
        assert autocast_dtype(cpu, "bf16") is torch.bfloat16
    else:
        with pytest.warns(UserWarning, match="this CPU .* no native bfloat16"):
            autocast_dtype(cpu, "bf16")


def test_a_checkpoint_from_another_device_or_precision_is_a_one_line_error(tmp_path, fake_gpu):
    from shufflenet.bookkeeping import Checkpoint

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
    with pytest.raises(CheckpointError, match=r"precision bf16 there, fp16 now \(resume with --precision bf16\)"):
        on_a_t4.check_same_run(state)


def test_every_option_but_the_free_ones_is_checked_on_resume(tmp_path):
    train(tiny_config(tmp_path, epochs=1))
    with pytest.raises(CheckpointError, match="label_smoothing=0.1 there, 0.0 now"):
        train(tiny_config(tmp_path, epochs=1, label_smoothing=0.0), resume=True)
    # Where it writes, how it shows progress and how many threads it uses may change.
    assert train(tiny_config(tmp_path, epochs=1, threads=1, progress=True), resume=True)["epochs"] == 1


# --- the ablation's control: a fixed random permutation in place of the shuffle -------------------------

def test_random_mixing_permutes_each_unit_by_a_fixed_permutation():
    config = TrainConfig(groups=3, scale=0.25, mixing="random", seed=0)
    model = train_module.build_model(config, 10, torch.device("cpu"))
    units = [m for m in model.modules() if isinstance(m, ShuffleUnit)]
    assert all(not unit.shuffle for unit in units)
    permutations = [unit.compress.permutation for unit in units]
    assert all(sorted(p.tolist()) == list(range(len(p))) for p in permutations)
    assert any(not torch.equal(p, torch.arange(len(p))) for p in permutations)
    again = train_module.build_model(config, 10, torch.device("cpu"))
    assert all(torch.equal(a.compress.permutation, b.compress.permutation)
               for a, b in zip(units, (m for m in again.modules() if isinstance(m, ShuffleUnit))))
    # The permutation really sits between the first group convolution and the depthwise one.
    unit = units[1].eval()
    x = torch.randn(1, unit.compress[0].in_channels, 8, 8)
    inside = unit.compress[2](unit.compress[1](unit.compress[0](x)))  # conv, BN, ReLU without the hook
    assert torch.equal(unit.compress(x), inside[:, unit.compress.permutation])
