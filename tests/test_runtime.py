"""Tests of shufflenet.runtime: the device to run on, what it is called, and writes that never leave half a
file."""

import stat
import subprocess
from pathlib import Path

import pytest
import torch

from shufflenet import runtime
from shufflenet.runtime import atomic_save, cpu_model_name, device_name, resolve_device


@pytest.mark.parametrize("cuda", [True, False])
def test_auto_is_the_gpu_when_there_is_one(monkeypatch, cuda):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert resolve_device("auto") == torch.device("cuda" if cuda else "cpu")
    assert resolve_device("cpu") == resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"'cuda' requested but CUDA is not available.*'auto' or 'cpu'"):
        resolve_device("cuda")


def test_the_cpu_is_named_by_its_model_and_threads(fake_cpuinfo):
    fake_cpuinfo("processor\t: 0\nmodel name\t: Example CPU 9000 @ 3.00GHz\n")
    assert cpu_model_name() == "Example CPU 9000 @ 3.00GHz"
    torch.set_num_threads(1)   # the autouse fixture restores the count
    assert device_name(torch.device("cpu")) == "CPU: Example CPU 9000 @ 3.00GHz, 1 thread(s)"


def test_without_cpuinfo_the_platform_names_the_cpu(monkeypatch):
    def no_file(path, *args, **kwargs):
        raise OSError("no /proc here")
    monkeypatch.setattr("builtins.open", no_file)
    monkeypatch.setattr("platform.processor", lambda: "")
    monkeypatch.setattr("platform.machine", lambda: "arm64")
    assert cpu_model_name() == "arm64"


def test_atomic_save_writes_text_and_tensors_readable_by_all(tmp_path):
    atomic_save("hello\n", tmp_path / "note.txt")
    atomic_save({"w": torch.arange(3)}, tmp_path / "weights.pt")
    assert (tmp_path / "note.txt").read_text() == "hello\n"
    assert torch.equal(torch.load(tmp_path / "weights.pt", weights_only=True)["w"], torch.arange(3))
    assert stat.S_IMODE((tmp_path / "note.txt").stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["note.txt", "weights.pt"]  # no temporary files


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path):
    path = tmp_path / "checkpoint.pt"
    atomic_save({"epoch": 1}, path)
    before = path.read_bytes()
    with pytest.raises(Exception):
        atomic_save({"cannot be pickled": lambda: None}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_provenance_names_the_package_version_and_the_checkout_commit(tmp_path):
    record = runtime.provenance()
    assert set(record) == {"package_version", "commit"}
    assert record["package_version"]  # installed, editable or not
    root = Path(runtime.__file__).resolve().parent.parent
    if (root / ".git").exists():  # a clone of the book: the commit it runs from
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        assert record["commit"] in (head, head + "-dirty")


def test_update_average_is_torchs_update_parameters_without_the_wait():
    """The same average, bit for bit, as AveragedModel.update_parameters over several steps (BatchNorm's
    statistics and counts included), with the count of updates kept on the host."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from shufflenet import shufflenet_v1

    torch.manual_seed(0)
    model = shufflenet_v1(3, 0.25, num_classes=10, small_input=True).train()
    ours, torchs = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
                    for _ in range(2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(4):
        model(torch.randn(8, 3, 32, 32)).logsumexp(1).mean().backward()  # moves BatchNorm's statistics
        optimizer.step()
        runtime.update_average(ours, model)
        torchs.update_parameters(model)
    mine, reference = ours.state_dict(), torchs.state_dict()
    assert mine.keys() == reference.keys() and int(mine["n_averaged"]) == 4
    assert all(torch.equal(mine[key], reference[key]) for key in mine)
    assert not torch.equal(mine["module.classifier.weight"], model.classifier.weight)  # an average
    assert ours.n_averaged.device.type == "cpu"
