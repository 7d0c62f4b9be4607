"""Tests of the benchmark wing, shufflenet/bench/: its timing, its experiments and its command line.

Everything runs tiny (few rounds, small tensors) and writes only into tmp_path.
"""

import csv
import inspect
import json
import re
import subprocess
import sys

import pytest
import torch

from shufflenet import bench, count_macs, shufflenet_v1
from shufflenet.bench import __main__ as cli
from shufflenet.bench.step import recipe_step
from shufflenet.bench.timing import time_interleaved

EXPERIMENTS = ("models", "shuffle", "g2", "profile", "pipeline", "step")


# --- timing ---------------------------------------------------------------------------------------

class FakeMachine:
    """A clock that advances only when a fake operation runs, by that operation's cost."""

    def __init__(self):
        self.t, self.calls = 0.0, []

    def op(self, name, cost):
        def run():
            self.t += cost
            self.calls.append(name)
        return run

    def now(self):
        return self.t


def test_time_interleaved_measures_each_callable_per_call():
    m = FakeMachine()
    times = time_interleaved({"a": m.op("a", 2.0), "b": m.op("b", 5.0)}, repeats=3, warmup=2,
                             min_block_s=12.0, now=m.now)
    assert times == {"a": [2.0] * 3, "b": [5.0] * 3}
    # warm-up 2 + 1 call to size the block, then 3 blocks of ceil(12 / 2) = 6 and ceil(12 / 5) = 3 calls
    assert m.calls.count("a") == 2 + 1 + 3 * 6 and m.calls.count("b") == 2 + 1 + 3 * 3


def test_time_interleaved_alternates_blocks_and_settles_untimed():
    m = FakeMachine()
    times = time_interleaved({"a": m.op("a", 1.0), "b": m.op("b", 3.0)}, repeats=2, warmup=1,
                             settle=1, now=m.now)
    assert times == {"a": [1.0, 1.0], "b": [3.0, 3.0]}  # the settling calls are not timed
    timed = "".join(m.calls[4:])  # after warm-up and sizing: a a b b
    assert timed == "aabbaabb"  # each round: a settle + a block of a, then the same for b


def test_a_burst_of_load_hits_every_configuration_alike():
    m = FakeMachine()
    slow_round = {"factor": 1.0}

    def op(name, cost):
        def run():
            m.t += cost * slow_round["factor"]
        return run

    fns = {"a": op("a", 1.0), "b": op("b", 2.0)}
    calls = {"n": 0}

    def now():  # the load arrives during the second of three rounds, for both a and b
        calls["n"] += 1
        slow_round["factor"] = 10.0 if 9 <= calls["n"] <= 12 else 1.0
        return m.t

    times = time_interleaved(fns, repeats=3, warmup=1, now=now)
    assert times["a"][1] == 10.0 and times["b"][1] == 20.0
    medians = {k: bench.summarize(v)["median_ms"] / 1e3 for k, v in times.items()}
    assert medians == {"a": 1.0, "b": 2.0}


def test_summarize_reports_the_median_and_quartiles():
    stats = bench.summarize([0.003, 0.001, 0.002, 0.005, 0.001])
    assert (stats["median_ms"], stats["q25_ms"], stats["q75_ms"], stats["iqr_ms"]) == (2, 1, 3, 2)
    assert stats["min_ms"] == 1 and stats["n"] == 5


def test_clock_choices_are_checked():
    with pytest.raises(ValueError, match="clock must be one of"):
        time_interleaved({"a": lambda: None}, 1, 1, clock="sundial")
    with pytest.raises(ValueError, match="cannot see time spent on a GPU"):
        time_interleaved({"a": lambda: None}, 1, 1, clock="cpu", device="cuda")


# --- experiments, called as functions -------------------------------------------------------------

def test_forms_compute_the_same_function():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    model = bench.build_model("shufflenet_v1_g3_x0_5")
    with torch.inference_mode():
        expected = model(x)
        fast, memory_format = bench.prepare(model, "channels_last")
        got = fast(x.contiguous(memory_format=memory_format))
    assert memory_format is torch.channels_last and torch.allclose(got, expected, atol=1e-5)
    with pytest.raises(ValueError, match="unknown form 'tensorrt'"):
        bench.prepare(model, "tensorrt")
    with pytest.raises(ValueError, match="unknown model 'alexnet'"):
        bench.build_model("alexnet")


def test_shuffle_rows_time_three_ways_and_check_the_layout():
    rows = bench.run_shuffle(shapes=[(6, 4, 4)], batches=[2], repeats=2, warmup=1, min_block_ms=0.1)
    assert [r["layout"] for r in rows] == ["nchw", "channels_last"]
    for r in rows:
        assert r["output_keeps_layout"] and r["clone_us"] > 0 and r["shuffle_us"] > 0
        assert r["native_us"] > 0 and r["megabytes"] == round(2 * 6 * 16 * 4 / 2**20, 3)
    with pytest.raises(ValueError, match="groups=3 does not divide the 8 channels"):
        bench.run_shuffle(shapes=[(8, 4, 4)], repeats=1)


def test_g2_widths_hold_the_multiply_adds():
    assert [bench.g2_channels(128, g) for g in (1, 2, 4, 8)] == [128, 180, 256, 360]  # V2's Table 2
    rows = bench.run_g2(base_channels=[64], layouts=["nchw"], size=2, depth=3, repeats=2, warmup=1,
                        min_block_ms=0.1)
    macs = [r["macs_per_image"] for r in rows]
    assert [r["groups"] for r in rows] == [1, 2, 4, 8] and max(macs) == macs[0]
    assert min(macs) > 0.9 * macs[0] and all(r["images_per_s"] > 0 for r in rows)
    assert [conv.groups for conv in bench.g2_network(24, 4, depth=3)] == [4, 4, 4]


def test_profile_finds_the_shuffle_among_copies_and_views():
    x = torch.randn(1, 3, 32, 32)
    for mixing in ("shuffle", "none"):
        model = shufflenet_v1(groups=3, scale=0.5, mixing=mixing).eval()
        rows = {r["category"]: r for r in bench.profile_model(model, x, iterations=2, warmup=1)}
        assert rows["convolution"]["calls"] == 1 + 16 * 3  # the stem, then three per unit
        assert sum(r["percent"] for r in rows.values()) == pytest.approx(100, abs=0.5)
        # In ShuffleNet V1 only the shuffle calls copies and views: five operators per unit.
        assert rows.get("copies and views", {}).get("calls", 0) == (16 * 5 if mixing == "shuffle" else 0)


def test_pipeline_rows_compare_both_paths():
    rows = bench.run_pipeline(batch=8, train_steps=1, data_steps=2, device="cpu", repeats=1,
                              warmup=1)
    assert [r["measure"] for r in rows] == ["pipeline alone", "with training step"]
    for r in rows:
        assert r["fast_ips"] > 0 and r["dataloader_ips"] > 0 and r["device"] == "cpu"
        assert r["precision"] == "float32"  # "auto" on a CPU, as the trainer resolves it


def test_pipeline_times_the_recipes_step_in_its_precision_after_the_prefetched_batches():
    rows = bench.run_pipeline(batch=8, train_steps=1, data_steps=1, device="cpu", repeats=1,
                              warmup=1, num_workers=2, precision="fp16")
    assert all(r["precision"] == "float16" and r["warmup"] == 5 for r in rows)  # 2 workers x 2 batches


def test_step_rows_time_the_recipes_step_in_each_form():
    rows = bench.run_step(scale=0.25, batch=4, forms=("eager", "channels_last"), device="cpu", steps=2,
                          repeats=2, warmup=1)
    assert [r["form"] for r in rows] == ["eager", "channels_last"]
    for r in rows:
        assert r["device"] == "cpu" and r["precision"] == "float32" and r["steps"] == 4
        assert 0 < r["issue_ms"] <= r["step_ms"] and r["compile_s"] is None
        # Nothing on a CPU runs asynchronously: handing a step over is finishing it.
        assert r["issue_share"] > 0.9
        assert r["images_per_s"] == pytest.approx(4 / r["step_ms"] * 1e3, rel=1e-3)


def test_step_rows_for_copies_stacked_count_the_images_of_every_copy():
    rows = bench.run_step(scale=0.25, batch=4, forms=("channels_last",), device="cpu", steps=1,
                          repeats=1, warmup=1, ema=0.9, copies=(1, 3))
    assert [(r["form"], r["copies"]) for r in rows] == [("channels_last", 1), ("channels_last", 3)]
    assert rows[1]["images_per_s"] == pytest.approx(3 * 4 / rows[1]["step_ms"] * 1e3, rel=1e-3)
    with pytest.raises(ValueError, match=r"copies must be whole numbers of 1 or more, got \[0\]"):
        bench.run_step(device="cpu", copies=(0,))


def test_the_recipe_step_runs_a_compiled_model_though_it_has_no_len():
    """torch.compile's module raises TypeError on len(), and so on bool(): ``compiled or model`` broke the
    benchmark's compiled forms. A stand-in with the same len() checks the step takes it as it is."""
    class Compiled(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model, self.calls = model, 0

        def __len__(self):
            raise TypeError("ShuffleNetV1 does not support len()")

        def forward(self, images):
            self.calls += 1
            return self.model(images)

    torch.manual_seed(0)
    model = shufflenet_v1(3, 0.25, num_classes=10)
    compiled = Compiled(model)
    step = recipe_step(model, None, ema=0.9, compiled=compiled)
    step(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))
    assert compiled.calls == 1


def test_step_refuses_unknown_forms_and_cuda_graphs_without_a_gpu():
    with pytest.raises(ValueError, match="unknown form 'tensorrt'; choose from eager"):
        bench.run_step(forms=("tensorrt",), device="cpu")
    with pytest.raises(ValueError, match="needs --device cuda"):
        bench.run_step(forms=("compile_cudagraphs",), device="cpu")


def test_export_matches_eager():
    torch.manual_seed(0)
    exported, diff = bench.export_and_check(shufflenet_v1(groups=3, scale=0.5), torch.randn(1, 3, 32, 32))
    assert diff < 1e-5
    targets = {node.target for node in exported.graph.nodes if node.op == "call_function"}
    assert torch.ops.aten.conv2d.default in targets  # a graph of ATen operators, no Python left


# --- the command line -----------------------------------------------------------------------------

def test_help_lists_every_experiment():
    result = subprocess.run([sys.executable, "-m", "shufflenet.bench", "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    listed = re.findall(r"^    (\w+)\s{2,}\S", result.stdout, flags=re.MULTILINE)
    assert listed == list(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_keyword_is_an_option_with_the_functions_default(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([name, "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # undo the line wrapping
    run, _ = cli.EXPERIMENTS[name]
    for key, parameter in inspect.signature(run).parameters.items():
        assert f"--{key.replace('_', '-')} " in text
        default = parameter.default
        shown = "all" if isinstance(default, tuple) and list(default) == cli.CHOICES.get(key) \
            else cli._show(default)
        assert f"(default: {shown})" in text, key


def test_the_command_line_passes_only_what_was_given():
    name, kwargs, _ = cli.parse_args([])
    assert name == "models" and kwargs == {}  # the function's own defaults apply
    name, kwargs, _ = cli.parse_args(["--quick"])
    assert kwargs == cli.QUICK["models"]
    _, kwargs, _ = cli.parse_args(["--quick", "--repeats", "5", "--device", "cpu"])
    assert kwargs["repeats"] == 5 and kwargs["devices"] == ["cpu"]  # what the user sets wins
    _, kwargs, _ = cli.parse_args(["pipeline", "--devices", "cpu", "--data", "folder"])
    assert kwargs == {"device": "cpu", "data": "folder"}
    _, kwargs, _ = cli.parse_args(["shuffle", "--shapes", "60x28x28", "6x2x2"])
    assert kwargs == {"shapes": [(60, 28, 28), (6, 2, 2)]}


@pytest.mark.parametrize("argv, message", [
    (["--models", "alexnet"], "invalid choice"),
    (["models", "--repeats", "0"], "expected a positive integer"),
    (["models", "--batch", "two"], "expected a positive integer"),
    (["shuffle", "--shapes", "60x28"], "expected a shape CxHxW"),
    (["no-such-benchmark"], "invalid choice"),
    (["shuffle", "--clock", "cpu"], "use it with --threads 1"),
    (["pipeline", "--clock", "cpu"], "unrecognized arguments: --clock"),
    (["step", "--forms", "compile_no_freezing"], "invalid choice"),  # a form of the models experiment
    (["step", "--ema", "1"], "expected a number in [0, 1)"),
])
def test_bad_arguments_fail_with_a_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given when CUDA is missing")
def test_asking_for_cuda_without_it_fails_clearly(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--quick", "--device", "cuda"])
    assert "CUDA is not available" in capsys.readouterr().err


def test_quick_models_run_records_the_machine_and_writes_json_and_csv(tmp_path, capsys):
    threads = torch.get_num_threads()
    argv = ["--quick", "--models", "shufflenet_v1_g3_x0_5", "--repeats", "2", "--threads", "1",
            "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    assert torch.get_num_threads() == threads  # --threads holds for the run only
    assert "shufflenet_v1_g3_x0_5" in capsys.readouterr().out
    payload = json.loads((tmp_path / "models.json").read_text())
    assert payload["command"] == "python -m shufflenet.bench models " + " ".join(argv)
    assert payload["machine"]["torch_threads"] == 1 and payload["machine"]["cpu_count"] >= 1
    settings = payload["settings"]
    assert settings["repeats"] == 2 and settings["size"] == 64 and settings["seed"] == 0
    assert settings["threads"] == 1 and settings["clock"] == "wall"
    eager, channels_last = payload["results"]
    assert (eager["form"], channels_last["form"]) == ("eager", "channels_last")
    assert eager["max_abs_diff_vs_eager"] == 0 and channels_last["max_abs_diff_vs_eager"] < 1e-4
    net = shufflenet_v1(groups=3, scale=0.5)
    assert eager["macs"] == count_macs(net, 64) + 480 * 1000  # the classifier is counted
    assert 0 < eager["latency_q25_ms"] <= eager["latency_median_ms"] <= eager["latency_q75_ms"]
    assert eager["latency_n"] == 2 and eager["throughput_median"] > 0
    with open(tmp_path / "models.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["form"] for r in rows] == ["eager", "channels_last"]


def test_the_benchmarks_never_import_the_trainer():
    code = "import sys, shufflenet.bench; assert 'shufflenet.train' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
