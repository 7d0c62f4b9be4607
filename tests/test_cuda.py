"""Tests that need a CUDA GPU. They skip cleanly elsewhere; `make gpu-check` runs them first, within a
limit of 140 s (scripts/gpu_check.sh), so every test here stays small: tiny runs on synthetic data, and a
compiled network of four units rather than sixteen (inductor's compile time grows with the graph).

What they hold the GPU path to: the precision ``auto`` picks for this GPU, exact resume after Ctrl-C on
the GPU in every precision, a clear error for a CPU checkpoint, the fast data path and the channel
shuffle equal to their CPU and torch references, a compiled step equal to the eager one, copies
trained as one equal to each alone, no host synchronisation inside a training step, and the
benchmarks' quick runs.
"""

import json
import os
import signal
import subprocess
import sys
import time

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS; set before CUDA starts

import pytest  # noqa: E402
import torch  # noqa: E402

from shufflenet import WIDTHS, ShuffleNetV1, channel_shuffle, shufflenet_v1  # noqa: E402
from shufflenet import train as train_module  # noqa: E402
from shufflenet.data import DeviceLoader, random_crop_flip, synthetic_cifar  # noqa: E402
from shufflenet.runs import main  # noqa: E402
from shufflenet.stacked import StackedModels, stack_per_copy, stacked_criterion  # noqa: E402
from shufflenet.train import (  # noqa: E402
    Interrupted,
    TrainConfig,
    autocast_dtype,
    train,
    train_step,
    update_average,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


@pytest.fixture
def deterministic():
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic = False


def tiny_config(out, **changes) -> TrainConfig:
    settings = dict(data="synthetic", scale=0.25, limit=256, batch_size=64, epochs=2, device="cuda",
                    out=str(out), progress=False)
    return TrainConfig(**{**settings, **changes})


def metrics(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def test_auto_precision_follows_the_compute_capability():
    native = torch.cuda.get_device_capability() >= (8, 0)
    assert autocast_dtype(CUDA) is (torch.bfloat16 if native else torch.float16)
    print(f"{torch.cuda.get_device_name()}: compute capability {torch.cuda.get_device_capability()}, "
          f"auto precision {autocast_dtype(CUDA)}")


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_a_tiny_cuda_run_resumes_exactly_after_ctrl_c(tmp_path, deterministic, precision):
    if precision == "bf16" and torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("bf16 is emulated on this GPU")
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    seconds = {}
    started = time.perf_counter()
    train(tiny_config(straight, precision=precision))
    seconds["straight"] = time.perf_counter() - started

    def ctrl_c_in_epoch_2(epoch, step):
        if (epoch, step) == (1, 1):
            signal.raise_signal(signal.SIGINT)

    started = time.perf_counter()
    with pytest.raises(Interrupted):
        train(tiny_config(stopped, precision=precision), callback=ctrl_c_in_epoch_2)
    seconds["stopped"] = time.perf_counter() - started
    started = time.perf_counter()
    train(tiny_config(stopped, precision=precision), resume=True)
    seconds["resumed"] = time.perf_counter() - started
    # Where the time goes, for the GPU check's log: each run's epochs print their own seconds, so a gap
    # between these and the epochs' sum is time spent outside the training loop.
    print(f"{precision}: " + ", ".join(f"{name} run {value:.1f} s" for name, value in seconds.items()))
    assert metrics(stopped) == metrics(straight)
    a, b = (torch.load(out / "checkpoint.pt", weights_only=True)["model"] for out in (straight, stopped))
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_a_cpu_checkpoint_resumed_on_cuda_is_a_one_line_error(tmp_path, capsys, cli_args):
    assert main(cli_args(tmp_path)) == 0  # on the CPU
    capsys.readouterr()
    assert main(cli_args(tmp_path, "--device", "cuda", "--resume")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "device cpu there, cuda now" in err and "Traceback" not in err


def test_device_loader_on_cuda_equals_the_cpu_one():
    _, test = synthetic_cifar(num_train=8, num_test=300)
    for (x_cpu, y_cpu), (x_gpu, y_gpu) in zip(DeviceLoader(test, 64, "cpu", train=False),
                                              DeviceLoader(test, 64, CUDA, train=False), strict=True):
        assert torch.equal(y_cpu, y_gpu.cpu()) and torch.allclose(x_cpu, x_gpu.cpu(), atol=1e-6)
        assert x_gpu.is_contiguous(memory_format=torch.channels_last)
    offsets = tuple(t for t in (torch.randint(0, 9, (300,)), torch.randint(0, 9, (300,)),
                                torch.rand(300) < 0.5))
    on_cpu = random_crop_flip(test.images, offsets=offsets)
    on_gpu = random_crop_flip(test.images.to(CUDA), offsets=tuple(t.to(CUDA) for t in offsets))
    assert torch.equal(on_cpu, on_gpu.cpu())


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_channel_shuffle_on_cuda_equals_nn_channel_shuffle(memory_format):
    x = torch.randn(8, 240, 14, 14, device=CUDA).contiguous(memory_format=memory_format)
    out = channel_shuffle(x, 3)
    assert torch.equal(out, torch.nn.ChannelShuffle(3)(x))
    assert out.is_contiguous(memory_format=memory_format)


def _step_parts(model, dtype):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    return optimizer, scheduler, scaler, torch.nn.CrossEntropyLoss(label_smoothing=0.1)


def _batch(n=64):
    train_split, _ = synthetic_cifar(num_train=n, num_test=8)
    return next(iter(DeviceLoader(train_split, n, CUDA, train=True)))


def _never_waits(step, times=3):
    """Run ``step()`` ``times`` times with CUDA's sync debug mode raising at any host synchronisation."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(times):
            step()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.fixture
def full_fp32():
    """Plain fp32 arithmetic: by default cuDNN convolves fp32 in TF32 (10-bit mantissa), and eager and
    compiled code may pick different kernels, so a comparison in TF32 measures kernel choice, not us."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_a_compiled_training_step_equals_the_eager_one(full_fp32):
    # On the H200 of the committed GPU check (with TF32 on, before this fixture existed) the losses
    # agreed within 1e-3, but the stem's weights after the step differed by up to 4%: see the closing
    # note of issue 9 and notebooks/results/gpu-check/.
    torch.manual_seed(0)
    # Four units (two stride-1 ones with their residual sum, two stride-2 ones with their concatenation)
    # hold every kind of layer of the sixteen, and compile in a fraction of the time.
    eager, compiled = (ShuffleNetV1(WIDTHS[(3, 0.25)], 3, num_classes=10, small_input=True,
                                    stage_repeats=(2, 1, 1)).to(CUDA, memory_format=torch.channels_last)
                       for _ in range(2))
    compiled.load_state_dict(eager.state_dict())
    images, labels = _batch()
    losses = []
    for model, forward in ((eager, eager), (compiled, torch.compile(compiled))):
        losses.append(train_step(forward, images, labels, *_step_parts(model, None), None).item())
    assert abs(losses[0] - losses[1]) < 1e-3 * abs(losses[0])
    for a, b in zip(eager.parameters(), compiled.parameters()):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-4)


def test_a_training_step_never_waits_for_the_gpu():
    """No ``.item()``, no host copy, nothing that synchronises inside the step (bf16 or fp32, no scaler:
    fp16's gradient scaler must read its inf check on the host, a documented synchronisation), nor in
    the update of the moving average that follows it (``--ema``; torch's own update_parameters waits)."""
    dtype = torch.bfloat16 if torch.cuda.get_device_capability() >= (8, 0) else None
    model = shufflenet_v1(3, 0.25, num_classes=10, small_input=True).to(CUDA,
                                                                         memory_format=torch.channels_last)
    parts = _step_parts(model, dtype)
    averaged = train_module.moving_average(model, 0.999)
    images, labels = _batch()
    train_step(model, images, labels, *parts, dtype)  # the first step allocates optimiser state
    update_average(averaged, model)

    def step():
        train_step(model, images, labels, *parts, dtype)
        update_average(averaged, model)
    _never_waits(step)


def test_copies_stacked_on_the_gpu_step_as_each_would_alone_and_never_wait(full_fp32):
    """Two copies trained as one (``--copies``): one step matches each copy's own step, and the stacked
    step and its moving average issue no synchronisation either."""
    torch.manual_seed(0)
    alone = [ShuffleNetV1(WIDTHS[(3, 0.25)], 3, num_classes=10, small_input=True, stage_repeats=(2, 1, 1))
             .to(CUDA, memory_format=torch.channels_last) for _ in range(2)]
    stack = StackedModels(alone)
    images, labels = _batch()
    images, labels = stack_per_copy([images, images.flip(3)]), torch.stack([labels, labels])
    parts = list(_step_parts(stack, None))
    parts[3] = stacked_criterion(parts[3])
    losses = train_step(stack, images, labels, *parts, None)
    for k, model in enumerate(alone):
        own = train_step(model, images[k], labels[k], *_step_parts(model, None), None)
        assert abs(losses[k].item() - own.item()) < 1e-3 * abs(own.item())
        for name, weight in stack.copy(k).state_dict().items():
            assert torch.allclose(weight.float(), model.state_dict()[name].float(), rtol=1e-3, atol=1e-4)
    averaged = train_module.moving_average(stack, 0.999)
    update_average(averaged, stack)
    dtype = torch.bfloat16 if torch.cuda.get_device_capability() >= (8, 0) else None

    def step():
        train_step(stack, images, labels, *parts, dtype)
        update_average(averaged, stack)
    _never_waits(step)


def test_the_benchmark_runs_quickly_on_cuda(tmp_path):
    done = subprocess.run([sys.executable, "-m", "shufflenet.bench", "models", "--quick", "--devices", "cuda",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    print(done.stdout[-3000:])
    assert list(tmp_path.glob("*.json"))
    done = subprocess.run([sys.executable, "-m", "shufflenet.bench", "step", "--quick", "--device", "cuda",
                           "--copies", "1", "4"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    print(done.stdout[-3000:])


def test_train_module_does_not_count_emulated_bf16_as_native():
    # torch.cuda.is_bf16_supported() also counts emulation; ours must not.
    assert train_module.native_bf16(CUDA) == (torch.cuda.get_device_capability() >= (8, 0))
