"""Tests of the benchmark command line (shufflenet/bench.py): fast runs only (--quick), files in tmp_path."""

import csv
import json
import math
import subprocess
import sys

import pytest
import torch

from shufflenet import bench, shufflenet_v1


def test_help_runs_as_a_module_and_lists_the_subcommands():
    result = subprocess.run([sys.executable, "-m", "shufflenet.bench", "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    for name in ("models", "shuffle", "g2", "profile"):
        assert name in result.stdout


def test_subcommand_help_documents_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["models", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--models", "--forms", "--devices", "--repeats", "--batch", "--quick", "--out"):
        assert option in text


def test_models_is_the_default_subcommand():
    assert bench.parse_args([]).subcommand == "models"
    args = bench.parse_args(["--quick"])
    assert args.subcommand == "models" and args.quick and args.repeats == 3
    # An option the user sets wins over --quick's choice.
    assert bench.parse_args(["--quick", "--repeats", "5"]).repeats == 5


@pytest.mark.parametrize("argv, message", [
    (["--models", "alexnet"], "invalid choice"),
    (["models", "--repeats", "0"], "expected a positive integer"),
    (["models", "--batch", "two"], "expected a positive integer"),
    (["shuffle", "--shapes", "60x28"], "expected a shape CxHxW"),
    (["no-such-benchmark"], "invalid choice"),
    (["shuffle", "--clock", "cpu"], "use it with --threads 1"),
])
def test_bad_arguments_fail_with_a_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given when CUDA is missing")
def test_asking_for_cuda_without_it_fails_clearly(capsys):
    with pytest.raises(SystemExit):
        bench.main(["models", "--devices", "cuda"])
    assert "CUDA is not available" in capsys.readouterr().err


def test_quick_models_run_writes_json_and_csv(tmp_path, capsys):
    threads = torch.get_num_threads()
    assert bench.main(["--quick", "--devices", "cpu", "--threads", "1", "--out", str(tmp_path)]) == 0
    assert torch.get_num_threads() == threads  # --threads holds for the run only
    printed = capsys.readouterr().out
    assert "shufflenet_v1_g8_x0_5" in printed and "latency ms" in printed
    payload = json.loads((tmp_path / "models.json").read_text())
    assert payload["benchmark"] == "models"
    for key in ("cpu_model", "cpu_count", "torch", "torchvision"):
        assert payload["machine"][key]
    assert payload["machine"]["torch_threads"] == 1
    (row,) = payload["results"]
    assert row["model"] == "shufflenet_v1_g8_x0_5" and row["form"] == "eager" and row["device"] == "cpu"
    assert 0 < row["latency_q25_ms"] <= row["latency_median_ms"] <= row["latency_q75_ms"]
    assert row["latency_n"] == 3 and row["throughput_median"] > 0 and row["batch"] == 2
    assert row["max_abs_diff_vs_eager"] == 0.0
    assert payload["best"]["shufflenet_v1_g8_x0_5"]["cpu"]["form"] == "eager"
    with open(tmp_path / "models.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and float(rows[0]["latency_median_ms"]) == row["latency_median_ms"]


def test_quick_shuffle_run_compares_with_clone(tmp_path):
    bench.main(["shuffle", "--quick", "--devices", "cpu", "--threads", "1", "--out", str(tmp_path)])
    payload = json.loads((tmp_path / "shuffle.json").read_text())
    rows = payload["results"]
    assert {r["layout"] for r in rows} == {"nchw", "channels_last"}
    for r in rows:
        assert r["clone_us"] > 0 and r["shuffle_us"] > 0 and r["native_us"] > 0
        assert math.isclose(r["shuffle_over_clone"], r["shuffle_us"] / r["clone_us"], rel_tol=0.01)


def test_quick_pipeline_run_compares_fast_path_with_dataloader(tmp_path):
    bench.main(["pipeline", "--quick", "--devices", "cpu", "--threads", "1", "--out", str(tmp_path)])
    payload = json.loads((tmp_path / "pipeline.json").read_text())
    rows = {r["measure"]: r for r in payload["results"]}
    assert set(rows) == {"pipeline alone", "with training step"}
    for r in rows.values():
        assert r["fast_ips"] > 0 and r["dataloader_ips"] > 0
        assert math.isclose(r["ratio"], r["fast_ips"] / r["dataloader_ips"], rel_tol=0.01)
    assert payload["settings"]["data"] == "synthetic"


def test_g2_widths_keep_the_flops_fixed():
    assert [bench.g2_channels(128, g) for g in (1, 2, 4, 8)] == [128, 180, 256, 360]
    for base in (64, 128):
        flops = [bench.g2_channels(base, g) ** 2 / g for g in (1, 2, 4, 8)]
        assert flops[0] == max(flops) and min(flops) / max(flops) > 0.94
    net = bench.g2_network(24, 4, depth=10)
    assert len(net) == 10 and all(conv.groups == 4 for conv in net)


def test_quick_g2_and_profile_runs(tmp_path):
    bench.main(["g2", "--quick", "--devices", "cpu", "--threads", "1", "--out", str(tmp_path)])
    g2 = json.loads((tmp_path / "g2.json").read_text())["results"]
    assert [r["groups"] for r in g2] == [1, 2, 4, 8] and all(r["images_per_s"] > 0 for r in g2)
    bench.main(["profile", "--quick", "--threads", "1", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "profile.json").read_text())["results"]
    categories = {r["category"] for r in rows}
    assert {"convolution", "channel shuffle", "batch norm"} <= categories
    assert math.isclose(sum(r["percent"] for r in rows), 100, abs_tol=0.5)


def test_profiling_restores_the_package_shuffle():
    from shufflenet import channel_shuffle, unit

    bench.profile_model(shufflenet_v1(groups=3, scale=0.5).eval(), torch.randn(1, 3, 32, 32), iterations=1, warmup=1)
    assert unit.channel_shuffle is channel_shuffle


def test_forms_compute_the_same_function():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    model = bench.build_model("shufflenet_v1_g3_x0_5")
    with torch.inference_mode():
        expected = model(x)
        fast, memory_format = bench.prepare(model, "channels_last")
        got = fast(x.contiguous(memory_format=memory_format))
    assert memory_format is torch.channels_last
    assert torch.allclose(got, expected, atol=1e-5)
    with pytest.raises(ValueError, match="unknown form"):
        bench.prepare(model, "tensorrt")


def test_export_matches_eager():
    torch.manual_seed(0)
    model = shufflenet_v1(groups=3, scale=1.0)
    exported, diff = bench.export_and_check(model, torch.randn(1, 3, 64, 64), atol=1e-5)
    assert diff < 1e-5
    targets = {node.target for node in exported.graph.nodes if node.op == "call_function"}
    assert torch.ops.aten.conv2d.default in targets  # a graph of ATen operators, no Python left


def test_a_new_subcommand_can_be_registered():
    calls = []
    command = bench.Subcommand("dummy", "a test benchmark", lambda p: p.add_argument("--size", type=int),
                               lambda args: calls.append(args.size) or {}, defaults={"size": 7, "repeats": 1},
                               quick={})
    bench.register(command)
    try:
        assert bench.main(["dummy"]) == 0 and calls == [7]
        with pytest.raises(ValueError, match="already registered"):
            bench.register(command)
    finally:
        del bench.SUBCOMMANDS["dummy"]
