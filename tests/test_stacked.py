"""Tests of shufflenet.stacked and ``--copies``: copies of one network trained as one stacked model train
as each would alone (to rounding), step by step and in the trainer, resume exactly, and export a results
folder per copy."""

import json

import pytest
import torch
from torch import nn

from shufflenet import shufflenet_v1
from shufflenet.bookkeeping import TrainingError
from shufflenet.data import DeviceLoader, synthetic_cifar
from shufflenet.runs import main
from shufflenet.runtime import moving_average, update_average
from shufflenet.stacked import StackedLoader, StackedModels, stack_per_copy, stacked_criterion
from shufflenet.train import parameter_groups, train


def copies_of(mixing="shuffle", seeds=(0, 1, 2), dtype=torch.float64):
    models = []
    for seed in seeds:
        torch.manual_seed(seed)
        model = shufflenet_v1(3, 0.25, num_classes=10, mixing=mixing, zero_init_residual=True)
        models.append(model.to(dtype))
    return models


@pytest.mark.parametrize("mixing", ["shuffle", "random"])
def test_a_stack_trains_each_copy_as_it_would_train_alone(mixing):
    """Three SGD steps (Nesterov, weight decay) with a moving average: every weight, BatchNorm statistic
    and averaged weight of each copy matches the same copy trained alone, to float64 rounding."""
    alone = copies_of(mixing)
    stack = StackedModels(alone)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    sgd = dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    optimizers = [torch.optim.SGD(m.parameters(), **sgd) for m in [stack, *alone]]
    averages = [moving_average(m, 0.9) for m in [stack, *alone]]
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        images = torch.randn(3, 8, 3, 32, 32, generator=generator, dtype=torch.float64)
        labels = torch.randint(0, 10, (3, 8), generator=generator)
        losses = stacked_criterion(criterion)(stack(images), labels)
        assert losses.shape == (3,)
        losses.sum().backward()
        for k, model in enumerate(alone):
            own = criterion(model(images[k]), labels[k])
            assert torch.allclose(losses[k], own, rtol=1e-9, atol=1e-12)
            own.backward()
        for optimizer, average, model in zip(optimizers, averages, [stack, *alone]):
            optimizer.step()
            optimizer.zero_grad()
            update_average(average, model)
    for k, model in enumerate(alone):
        for mine, theirs in ((stack.copy(k), model), (averages[0].module.copy(k), averages[k + 1].module)):
            ours, own = mine.state_dict(), theirs.state_dict()
            assert ours.keys() == own.keys()
            for name in own:
                assert torch.allclose(ours[name], own[name], rtol=1e-9, atol=1e-12), (k, name)


def test_one_batch_for_every_copy_evaluates_each_copy_on_it():
    alone = copies_of()
    stack = StackedModels(alone).eval()
    images = torch.randn(5, 3, 32, 32, dtype=torch.float64)
    logits = stack(images)
    assert logits.shape == (3, 5, 10)
    for k, model in enumerate(alone):
        assert torch.allclose(logits[k], model.eval()(images), rtol=1e-9, atol=1e-12)
    assert not stack.copy(0).training and stack.train().copy(0).training  # train() and eval() reach in


def test_a_copy_taken_out_is_an_ordinary_module_of_its_own():
    stack = StackedModels(copies_of(dtype=torch.float32))
    first = stack.copy(0)
    assert type(first) is type(copies_of()[0]) and sum(p.numel() for p in first.parameters()) * 3 == sum(
        p.numel() for p in stack.parameters())
    with torch.no_grad():
        next(stack.parameters()).add_(1)
    assert not torch.equal(next(first.parameters()), next(stack.parameters())[0])  # a copy, not a view
    with pytest.raises(IndexError, match=r"copy 3 of a stack of 3 \(0 to 2\)"):
        stack.copy(3)


def test_stacking_other_architectures_or_feeding_other_shapes_is_a_clear_error():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="copies of one architecture"):
        StackedModels([shufflenet_v1(3, 0.25), shufflenet_v1(8, 0.25)])
    with pytest.raises(ValueError, match="at least one model"):
        StackedModels([])
    stack = StackedModels(copies_of(dtype=torch.float32, seeds=(0, 1)))
    with pytest.raises(ValueError, match=r"first dimension of 2 \(the copies\)"):
        stack(torch.randn(3, 4, 3, 32, 32))
    with pytest.raises(ValueError, match=r"expected \(copies, B, C, H, W\) or \(B, C, H, W\)"):
        stack(torch.randn(3, 32, 32))


def test_weight_decay_skips_the_stacked_batchnorm_parameters_too():
    model = shufflenet_v1(3, 0.25)
    stack = StackedModels([model, model])
    single, stacked = parameter_groups(model, 5e-4), parameter_groups(stack, 5e-4)
    assert [len(g["params"]) for g in stacked] == [len(g["params"]) for g in single]
    assert all(p.ndim > 2 for p in stacked[0]["params"]) and all(p.ndim <= 2 for p in stacked[1]["params"])


def test_the_stacked_loader_gives_each_copy_its_own_seed_s_batches_in_channels_last():
    split = synthetic_cifar(num_train=64, num_test=8)[0]
    loaders = [DeviceLoader(split, 16, "cpu", train=True, seed=seed) for seed in (0, 1)]
    stacked = StackedLoader(loaders)
    stacked.set_epoch(1, start_step=2)
    alone = [DeviceLoader(split, 16, "cpu", train=True, seed=seed) for seed in (0, 1)]
    for loader in alone:
        loader.set_epoch(1, start_step=2)
    batches = list(stacked)
    assert len(stacked) == 4 and len(batches) == 2
    for (images, labels), *own in zip(batches, *alone):
        assert images.shape == (2, 16, 3, 32, 32) and labels.shape == (2, 16)
        assert images[0].is_contiguous(memory_format=torch.channels_last)
        for k, (own_images, own_labels) in enumerate(own):
            assert torch.equal(images[k], own_images) and torch.equal(labels[k], own_labels)
    assert not torch.equal(batches[0][1][0], batches[0][1][1])  # each seed its own order
    assert stack_per_copy([torch.zeros(2, 3, 4, 4)] * 2).is_contiguous()
    with pytest.raises(ValueError, match="same number of batches"):
        StackedLoader([loaders[0], DeviceLoader(split, 32, "cpu", train=True)])


def test_copies_trained_as_one_match_runs_of_their_own(tmp_path, tiny_config, image_folder):
    """``--copies 2`` on data that does not depend on the seed: each copy's metrics and weights are those
    of the run with its seed, to float32 rounding (a stacked convolution is one grouped convolution)."""
    root, _ = image_folder("tiny", per_class=(32, 8))
    options = dict(data=str(root), limit=None, batch_size=16, ema=0.9, test_flip=True)
    stacked = train(tiny_config(tmp_path / "stacked", copies=2, **options))
    alone = [train(tiny_config(tmp_path / f"seed{seed}", seed=seed, **options)) for seed in (0, 1)]
    rows = [json.loads(line) for line in (tmp_path / "stacked" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and len(rows[0]["train_loss"]) == len(rows[0]["test_acc"]) == 2
    for k, summary in enumerate(alone):
        assert stacked["test_acc"][k] == summary["test_acc"]
        assert {way: acc[k] for way, acc in stacked["final_test_acc"].items()} == summary["final_test_acc"]
        own_metrics = (tmp_path / f"seed{k}" / "metrics.jsonl").read_text().splitlines()
        own = [json.loads(line) for line in own_metrics]
        for row, own_row in zip(rows, own):
            assert row["train_loss"][k] == pytest.approx(own_row["train_loss"], abs=1e-5)
            assert row["test_acc"][k] == own_row["test_acc"]
    assert stacked["parameters"] == alone[0]["parameters"]
    weights = torch.load(tmp_path / "stacked" / "checkpoint.pt", weights_only=True)["model"]
    stack = StackedModels([shufflenet_v1(3, 0.25, num_classes=2)] * 2)
    stack.load_state_dict(weights)
    for k in (0, 1):
        own = torch.load(tmp_path / f"seed{k}" / "checkpoint.pt", weights_only=True)["model"]
        mine = stack.copy(k).state_dict()
        for name in own:
            assert torch.allclose(mine[name].float(), own[name].float(), atol=1e-4), name


def test_ctrl_c_in_a_stacked_run_resumes_exactly(tmp_path, monkeypatch, tiny_config):
    from test_bookkeeping import assert_same_run, interrupted_then_resumed

    real_step, calls = torch.optim.SGD.step, []

    def step_with_ctrl_c(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            import signal
            signal.raise_signal(signal.SIGINT)
        return real_step(self, *args, **kwargs)

    def arm(model):
        calls.clear()
        monkeypatch.setattr(torch.optim.SGD, "step", step_with_ctrl_c)

    straight, stopped = interrupted_then_resumed(tiny_config, tmp_path, monkeypatch, arm, copies=2,
                                                 ema=0.9)
    assert_same_run(straight, stopped)


@pytest.mark.parametrize("option, value", [("recipe", "imagenet"), ("pipeline", "dataloader"),
                                           ("bn_recalibrate", True)])
def test_copies_refuse_what_they_cannot_do_in_one_line(tmp_path, tiny_config, option, value):
    flags = {"recipe": "--recipe imagenet", "pipeline": "--pipeline dataloader"}
    flag = flags.get(option, "--bn-recalibrate")
    with pytest.raises(TrainingError, match=f"--copies 2 trains copies as one .* without {flag}"):
        train(tiny_config(tmp_path, copies=2, **{option: value}))


def test_export_of_copies_writes_a_results_folder_per_copy(tmp_path, capsys, cli_args):
    run = tmp_path / "run"
    pattern = str(tmp_path / "g3-shuffle-s{seed}")
    assert main(cli_args(run, "--copies", "2", "--seed", "5", "--test-flip", "--export", pattern)) == 0
    assert "(seeds 5 to 6)" in capsys.readouterr().out
    stacked = json.loads((run / "summary.json").read_text())
    for k, seed in enumerate((5, 6)):
        dest = tmp_path / f"g3-shuffle-s{seed}"
        summary = json.loads((dest / "summary.json").read_text())
        assert summary["config"]["seed"] == seed and summary["config"]["copies"] == 2
        assert summary["copy"] == k
        assert summary["test_acc"] == stacked["test_acc"][k]
        assert summary["final_test_acc"] == {w: a[k] for w, a in stacked["final_test_acc"].items()}
        rows = [json.loads(line) for line in (dest / "metrics.jsonl").read_text().splitlines()]
        assert isinstance(rows[0]["test_acc"], float) and isinstance(rows[0]["train_loss"], float)
        confusion = json.loads((dest / "confusion.json").read_text())
        assert confusion["accuracy"] == summary["test_acc"]
        model = shufflenet_v1(3, 0.25, num_classes=10)
        model.load_state_dict(torch.load(dest / "model.pt", weights_only=True))


@pytest.mark.parametrize("extra, message", [
    (["--export", "results"], "DIR must contain {seed}"),
    (["--evaluate"], "evaluate one copy's exported folder"),
])
def test_copies_cli_errors(tmp_path, capsys, cli_args, extra, message):
    with pytest.raises(SystemExit):
        main(cli_args(tmp_path / "run", "--copies", "2", *extra))
    assert message in capsys.readouterr().err
