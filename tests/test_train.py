"""Tests of shufflenet.train: the recipe and the loop (outputs, schedule, weight decay, precision, the
ablation's random mixing). Tiny synthetic runs on the CPU; resume and Ctrl-C are in test_bookkeeping.py.
"""

import json
import math

import pytest
import torch

from shufflenet import shufflenet_v1
from shufflenet import train as train_module
from shufflenet.data import DeviceLoader, synthetic_cifar
from shufflenet.runs import main
from shufflenet.train import (
    DivergedError,
    TrainConfig,
    autocast_dtype,
    evaluated_weights,
    make_scheduler,
    parameter_groups,
    predict,
    train,
)
from shufflenet.unit import ShuffleUnit


def test_run_writes_metrics_checkpoint_and_summary(tmp_path, tiny_config):
    summary = train(tiny_config(tmp_path, epochs=1))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
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


def test_the_summary_names_the_code_the_run_started_with(tmp_path, monkeypatch, tiny_config):
    """A checkout edited (or committed to) while a run trains does not relabel the run: the summary's
    commit is the one read when training started, not when it ended."""
    checkout = {"commit": "started"}
    monkeypatch.setattr(train_module.runtime, "provenance", lambda: dict(checkout))
    edit = lambda epoch, step: checkout.update(commit="edited during the run")  # noqa: E731
    summary = train(tiny_config(tmp_path, epochs=1), callback=edit)
    assert summary["commit"] == "started"


def test_dataloader_pipeline_and_image_folder(tmp_path, tiny_config, image_folder):
    root, _ = image_folder("tiny", per_class=(8, 4))
    summary = train(tiny_config(tmp_path / "run", data=str(root), limit=None, batch_size=4, epochs=1,
                                pipeline="dataloader", num_workers=0))
    assert summary["data"] == "tiny" and summary["train_images"] == 16 and summary["test_images"] == 8


def test_cutout_trains_on_the_fast_path_and_is_refused_elsewhere(tmp_path, tiny_config, image_folder):
    summary = train(tiny_config(tmp_path / "fast", epochs=1, cutout=8))
    assert summary["config"]["cutout"] == 8 and 0 <= summary["test_acc"] <= 1
    root, _ = image_folder("tiny", per_class=(8, 4))
    with pytest.raises(train_module.TrainingError, match="--cutout is part of the fast pipeline only"):
        train(tiny_config(tmp_path / "slow", data=str(root), limit=None, batch_size=4, epochs=1,
                          pipeline="dataloader", num_workers=0, cutout=8))


def test_the_first_epoch_projects_the_time_of_the_rest(tmp_path, capsys, tiny_config):
    train(tiny_config(tmp_path, epochs=3))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("epoch   1/3") and lines[1].startswith("projected: about")
    assert "remaining 2 epochs" in lines[1] and not any(line.startswith("projected") for line in lines[2:])


def test_nan_loss_stops_with_a_clear_message(tmp_path, monkeypatch, capsys, tiny_config, cli_args):
    class NaNLoss(torch.nn.CrossEntropyLoss):
        def forward(self, logits, labels):
            return super().forward(logits, labels) * float("nan")

    monkeypatch.setattr(train_module.nn, "CrossEntropyLoss", NaNLoss)
    with pytest.raises(DivergedError, match="loss became nan at epoch 1, step 2"):
        train(tiny_config(tmp_path / "direct"))
    assert main(cli_args(tmp_path / "cli")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "diverged" in err


def test_no_weight_decay_on_batchnorm_and_biases():
    model = shufflenet_v1(3, 0.25, num_classes=10, small_input=True)
    decay, no_decay = parameter_groups(model, 5e-4)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0
    assert all(p.ndim == 4 for p in decay["params"][:-1]) and decay["params"][-1].ndim == 2
    bn_and_bias = sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)
                      for p in m.parameters()) + model.classifier.bias.numel()
    assert sum(p.numel() for p in no_decay["params"]) == bn_and_bias


@pytest.mark.parametrize("mixing", ["shuffle", "none", "random"])
def test_build_model_builds_the_configured_variant_through_the_core(mixing):
    config = TrainConfig(groups=3, scale=0.25, mixing=mixing, zero_init_residual=True)
    torch.manual_seed(0)
    model = train_module.build_model(config, 10, torch.device("cpu"))
    torch.manual_seed(0)
    core = shufflenet_v1(3, 0.25, num_classes=10, small_input=True, mixing=mixing, zero_init_residual=True)
    assert all(unit.mixing == mixing for unit in model.modules() if isinstance(unit, ShuffleUnit))
    assert model.state_dict().keys() == core.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), core.state_dict().values()))


def test_autocast_dtype_choices():
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu) is None and autocast_dtype(cpu, "fp32") is None
    assert autocast_dtype(cpu, "bf16") == torch.bfloat16 and autocast_dtype(cpu, "fp16") == torch.float16
    with pytest.raises(ValueError, match=r"precision must be one of .*'bf16'.*got 'half'"):
        autocast_dtype(cpu, "half")


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
def test_cpu_bf16_is_native_only_with_avx512_bf16_or_amx(fake_cpuinfo, flags, native):
    fake_cpuinfo(f"processor\t: 0\nflags\t\t: {flags}\n")
    cpu = torch.device("cpu")
    assert train_module.native_bf16(cpu) is native
    assert autocast_dtype(cpu) is None  # auto on a CPU: fp32 either way
    if native:
        assert autocast_dtype(cpu, "bf16") is torch.bfloat16
    else:
        with pytest.warns(UserWarning, match="this CPU .* no native bfloat16"):
            autocast_dtype(cpu, "bf16")


def learning_rates(config, total_steps):
    """The learning rate of each of ``total_steps`` steps, as a real optimiser sees it, for both groups."""
    model = shufflenet_v1(3, 0.25, num_classes=10, small_input=True)
    optimizer = torch.optim.SGD(parameter_groups(model, 5e-4), lr=config.peak_lr)
    scheduler = make_scheduler(config, optimizer, total_steps)
    rates = []
    for _ in range(total_steps + 1):
        first, second = (group["lr"] for group in optimizer.param_groups)
        assert first == second
        rates.append(first)
        optimizer.step()
        scheduler.step()
    return rates


def test_onecycle_warms_up_from_a_25th_of_the_peak_over_a_quarter_then_falls_to_zero():
    config = TrainConfig(schedule="onecycle", lr=0.4)
    rates = learning_rates(config, 100)
    assert rates[0] == pytest.approx(0.4 / 25)
    assert max(rates) == pytest.approx(0.4) and rates.index(max(rates)) == 25
    rises = [b - a for a, b in zip(rates[:25], rates[1:26])]
    assert all(d == pytest.approx(rises[0]) for d in rises)                  # linear warm-up
    assert all(b < a for a, b in zip(rates[25:100], rates[26:101]))          # then only down
    assert rates[25 + 75 // 2] == pytest.approx(0.2, rel=0.03)               # a cosine: half way at half time
    assert rates[100] == pytest.approx(0, abs=1e-12)


def test_a_shorter_warm_up_peaks_earlier():
    rates = learning_rates(TrainConfig(schedule="onecycle", lr=0.4, warmup=0.1), 100)
    assert rates[0] == pytest.approx(0.4 / 25) and rates.index(max(rates)) == 10
    assert max(rates) == pytest.approx(0.4) and rates[100] == pytest.approx(0, abs=1e-12)


def test_test_flips_sum_the_logits_of_each_image_and_its_mirror_image():
    torch.manual_seed(0)
    model = shufflenet_v1(3, 0.25, num_classes=10, small_input=True).eval()
    _, test = synthetic_cifar(num_train=8, num_test=40)
    batches = DeviceLoader(test, 16, "cpu", train=False)
    predicted, labels = predict(model, batches, torch.device("cpu"), None, flip=True)
    images = torch.cat([x for x, _ in batches])
    with torch.no_grad():
        plain, mirrored = model(images), model(images.flip(3))
    assert torch.equal(predicted, (plain + mirrored).argmax(1)) and torch.equal(labels, test.labels)
    assert not torch.equal(plain.argmax(1), mirrored.argmax(1))  # the flips do change some predictions


def test_predictions_break_ties_the_same_way_for_top_1_and_top_5():
    """Tied logits (common in bfloat16): the top-1 prediction is the first of the top-5, so the summary's
    accuracy (top-5 pass) and the exported predictions (top-1 pass) count the same images."""
    class Tied(torch.nn.Module):
        def forward(self, images):
            tied = [-1.75, -3.5, -1.625, -2.875, 1.3359375, 1.3359375, -0.25, 0.3125, 0.0625, 1.125]
            return torch.tensor(tied).repeat(len(images), 1)  # classes 4 and 5 tie

    _, test = synthetic_cifar(num_train=8, num_test=40)
    batches = DeviceLoader(test, 16, "cpu", train=False)
    top1, _ = predict(Tied(), batches, torch.device("cpu"), None)
    top5, _ = predict(Tied(), batches, torch.device("cpu"), None, k=5)
    assert torch.equal(top1, top5[:, 0]) and set(top5[0, :2].tolist()) == {4, 5}


def test_the_moving_average_follows_the_weights_step_by_step(tmp_path, monkeypatch, tiny_config):
    """--ema 0.5: the average starts as a copy of the weights after the first step, then moves half way
    towards them after every step; it is what the run evaluates and exports."""
    built, after_each_step = [], []
    real_build = train_module.build_model
    monkeypatch.setattr(train_module, "build_model", lambda *a: built.append(real_build(*a)) or built[-1])
    record = lambda epoch, step: after_each_step.append(  # noqa: E731
        {k: v.detach().clone().float() for k, v in built[0].state_dict().items()})
    summary = train(tiny_config(tmp_path, ema=0.5), callback=record)
    expected = dict(after_each_step[0])
    for weights in after_each_step[1:]:
        expected = {k: 0.5 * expected[k] + 0.5 * weights[k] for k in expected}
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    averaged = evaluated_weights(state)
    assert len(after_each_step) == 4 and int(state["ema"]["n_averaged"]) == 4
    for key, value in averaged.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-6)
    assert not torch.equal(averaged["classifier.weight"], state["model"]["classifier.weight"])
    assert summary["config"]["ema"] == 0.5


def test_the_summary_scores_the_last_weights_every_way_the_options_offer(tmp_path, tiny_config):
    """One run measures flips and the moving average against the weights it trained: the summary's
    final_test_acc, of which the run's own choice is its test_acc."""
    plain = train(tiny_config(tmp_path / "plain", epochs=1))
    assert set(plain["final_test_acc"]) == {"weights", "weights+flip"}
    assert plain["final_test_acc"]["weights"] == plain["test_acc"]
    both = train(tiny_config(tmp_path / "both", epochs=1, ema=0.9, test_flip=True))
    finals = both["final_test_acc"]
    assert set(finals) == {"weights", "weights+flip", "ema", "ema+flip"}
    assert finals["ema+flip"] == both["test_acc"] and finals["weights"] == plain["test_acc"]


def test_cosine_starts_at_the_peak_without_warm_up():
    config = TrainConfig(schedule="cosine", batch_size=256)                 # peak 0.1 * 256 / 128 = 0.2
    rates = learning_rates(config, 40)
    assert rates[0] == pytest.approx(0.2)
    assert all(b < a for a, b in zip(rates[:40], rates[1:]))
    assert rates[20] == pytest.approx(0.1) and rates[10] == pytest.approx(0.1 * (1 + math.cos(math.pi / 4)))
    assert rates[40] == pytest.approx(0, abs=1e-12)
