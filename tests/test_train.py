"""Tests of shufflenet.train: outputs, exact resume, and clean one-line errors. Tiny synthetic runs on the CPU."""

import json
import shutil

import pytest
import torch

from shufflenet import train as train_module
from shufflenet.train import (CheckpointError, DivergedError, Interrupted, TrainConfig, autocast_dtype,
                              confusion_matrix, main, parameter_groups, train)
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


class InterruptAt:
    """A callback that presses Ctrl-C after a given step, keeping a copy of the last epoch's checkpoint."""

    def __init__(self, epoch, step, out):
        self.epoch, self.step, self.out = epoch, step, out

    def __call__(self, epoch, step):
        if (epoch, step) == (self.epoch, self.step):
            shutil.copy(self.out / "checkpoint.pt", self.out / "after_epoch_1.pt")
            raise KeyboardInterrupt


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


@pytest.mark.parametrize("precision, dtype", [("bf16", "bfloat16"), ("fp16", "float16")])
def test_mixed_precision_runs_and_resumes_exactly(tmp_path, precision, dtype):
    """The autocast and gradient-scaler code of a GPU run, exercised on the CPU (fp16 uses the scaler)."""
    straight = tmp_path / "straight"
    summary = train(tiny_config(straight, precision=precision))
    assert summary["precision"] == dtype
    scaler_state = torch.load(straight / "checkpoint.pt", weights_only=True)["scaler"]
    assert ("scale" in scaler_state) == (precision == "fp16")  # an enabled scaler saves its scale

    stopped = tmp_path / "stopped"
    with pytest.raises(Interrupted):
        train(tiny_config(stopped, precision=precision), callback=InterruptAt(1, 1, stopped))
    train(tiny_config(stopped, precision=precision), resume=True)
    assert without_seconds(read_metrics(stopped)) == without_seconds(read_metrics(straight))
    assert all(0 < row["train_loss"] < 10 for row in read_metrics(straight))


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
    assert sorted(p.name for p in dest.iterdir()) == ["confusion.json", "metrics.jsonl", "model.pt", "summary.json"]
    summary = json.loads((dest / "summary.json").read_text())
    confusion = json.loads((dest / "confusion.json").read_text())
    matrix = torch.tensor(confusion["matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == confusion["test_images"] == summary["test_images"]
    assert confusion["accuracy"] == summary["test_acc"] == round(matrix.diag().sum().item() / matrix.sum().item(), 6)
    model = shufflenet_v1(3, 0.25, num_classes=10, small_input=True)
    model.load_state_dict(torch.load(dest / "model.pt", weights_only=True))


def test_export_of_an_unfinished_run_is_a_clear_error(tmp_path):
    with pytest.raises(train_module.TrainingError, match="no finished run"):
        train_module.export_run(tiny_config(tmp_path), tmp_path / "results")


def test_resume_refuses_other_options(tmp_path):
    train(tiny_config(tmp_path, epochs=1))
    with pytest.raises(CheckpointError, match=r"epochs=1 there, 2 now"):
        train(tiny_config(tmp_path, epochs=2), resume=True)


def test_checkpoint_from_before_an_option_existed_resumes_with_its_default(tmp_path):
    train(tiny_config(tmp_path, epochs=1))
    path = tmp_path / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    del state["config"]["precision"]  # as written before --precision existed
    torch.save(state, path)
    assert train(tiny_config(tmp_path, epochs=1), resume=True)["epochs"] == 1
    with pytest.raises(CheckpointError, match=r"precision='auto' there, 'bf16' now"):
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
    assert summary["groups"] == 8 and summary["shuffle"] is False
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


def test_ctrl_c_during_evaluation_resumes_exactly(tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    train(tiny_config(straight))
    real_predict, calls = train_module.predict, []

    def predict_then_ctrl_c(*args):
        calls.append(1)
        if len(calls) == 2:  # the second epoch's evaluation
            raise KeyboardInterrupt
        return real_predict(*args)

    stopped = tmp_path / "stopped"
    monkeypatch.setattr(train_module, "predict", predict_then_ctrl_c)
    with pytest.raises(Interrupted, match="epoch 2, step 2"):
        train(tiny_config(stopped))
    monkeypatch.setattr(train_module, "predict", real_predict)
    train(tiny_config(stopped), resume=True)
    assert without_seconds(read_metrics(stopped)) == without_seconds(read_metrics(straight))
