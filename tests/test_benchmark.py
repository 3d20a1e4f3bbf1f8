"""benchmark.py writes its table, CSV and plot and resumes without redoing rows; fast_eval agrees
with the Brevitas model; each PTQ flag added for the benchmark runs to an export that passes the
demo's export checks."""
import csv
import subprocess

import pytest
import torch

import benchmark
import finn_mobilenetv2 as demo
from conftest import SMALL
from finn_demo.fast_eval import fast_evaluate

QUICK_PTQ = ["--calib_size=128"]  # GPxQ re-runs the model per layer: keep calibration small


def run_benchmark(out_dir, cache_dir, *flags):
    args, passed = benchmark.make_args(
        [f"--out_dir={out_dir}", f"--cache_dir={cache_dir}", *SMALL, "--calib_size=128",
         "--speed=False", "--finn_bits=", "--imagenet_calib_sizes=", *flags])
    return benchmark.main(args, passed, command="python benchmark.py (test)")


def csv_rows(out_dir):
    with open(out_dir / benchmark.CSV_NAME, newline="") as file:
        return list(csv.DictReader(file))


@pytest.fixture
def count_demo_runs(monkeypatch):
    """Count the demo runs benchmark.py makes; `fail_on` makes the run with that flag stop."""
    calls = []

    def counting_main(args):
        calls.append(args)
        if counting_main.fail_on and getattr(args, counting_main.fail_on):
            raise KeyboardInterrupt
        return real_main(args)

    real_main = demo.main
    counting_main.fail_on = None
    monkeypatch.setattr(demo, "main", counting_main)
    return calls, counting_main


def test_an_interrupted_benchmark_keeps_finished_rows_and_resumes_without_redoing_them(
        tmp_path, cache_dir, count_demo_runs):
    calls, counting_main = count_demo_runs
    counting_main.fail_on = "bias_corr"  # the second row is interrupted
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(tmp_path, cache_dir, "--bits=W8A8", "--ptq=none,bias_corr")
    assert [row["ptq"] for row in csv_rows(tmp_path)] == ["none"]
    assert not list(tmp_path.glob(".*.tmp"))  # the CSV was replaced whole, no partial file

    counting_main.fail_on = None
    calls.clear()
    rows, _ = run_benchmark(tmp_path, cache_dir, "--bits=W8A8", "--ptq=none,bias_corr")
    assert [call.bias_corr for call in calls] == [True]  # only the missing row ran
    assert [row["ptq"] for row in rows] == ["none", "bias_corr"]
    assert [row["ptq"] for row in csv_rows(tmp_path)] == ["none", "bias_corr"]
    # ... and the finished grid's figures, report and plot
    row = rows[0]
    assert float(row["float_top1"]) > 80.0
    drop = float(row["float_top1"]) - float(row["quant_top1"])
    assert float(row["drop"]) == pytest.approx(drop, abs=0.011)
    assert float(row["quant_ips_ort"]) > 0 and float(row["ort_agreement"]) >= 99.5
    assert {"s_calibration", "s_quantized_evaluation", "s_export"} <= set(row)
    report = (tmp_path / "RESULTS.md").read_text()
    assert "| W8A8 | none |" in report and "| W8A8 | bias_corr |" in report
    assert "python benchmark.py (test)" in report
    assert (tmp_path / benchmark.PLOT_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    calls.clear()
    run_benchmark(tmp_path, cache_dir, "--bits=W8A8", "--ptq=none", "--val_size=100")
    assert len(calls) == 1  # other pass-through flags: a new row, not the saved one


def test_benchmark_refuses_unknown_settings_and_flags():
    with pytest.raises(demo.ConfigError, match="W9A9"):
        benchmark.make_args(["--bits=W9A9"])
    with pytest.raises(demo.ConfigError, match="no_such_flag"):
        benchmark.make_args(["--no_such_flag=1"])
    with pytest.raises(demo.ConfigError, match="--grid_jobs=0"):
        benchmark.make_args(["--grid_jobs=0"])
    with pytest.raises(demo.ConfigError, match="--imagenet_val_sizes=64,64: give two increasing"):
        benchmark.make_args(["--imagenet_val_sizes=64,64"])


def test_parallel_grid_jobs_measure_the_same_rows_as_one_process(tmp_path, cache_dir):
    flags = ["--bits=W8A8", "--ptq=none,bn_corr", "--fast_eval=False"]
    serial, _ = run_benchmark(tmp_path / "serial", cache_dir, *flags)
    parallel, _ = run_benchmark(tmp_path / "parallel", cache_dir, *flags, "--grid_jobs=2")
    assert sorted(row["ptq"] for row in csv_rows(tmp_path / "parallel")) == ["bn_corr", "none"]
    assert [row["ptq"] for row in parallel] == ["none", "bn_corr"]  # the grid's order, not the finish order
    threads = str(max(1, torch.get_num_threads() // 2))  # the cores shared between the two jobs
    assert [row["threads"] for row in parallel] == [threads, threads]
    for one, other in zip(serial, parallel):  # other thread counts: at most one image may flip
        assert float(one["quant_top1"]) == pytest.approx(float(other["quant_top1"]), abs=0.6)


def test_fast_eval_agrees_with_the_brevitas_model_on_top1_at_4_bit_activations(run_demo, tmp_path):
    # (8 bits: test_eval_backend.py, on the session's W8A8 model)
    result = run_demo(tmp_path / "model.onnx", *benchmark.BIT_SETTINGS["PW4A4"])
    fast = fast_evaluate(result.model, result.val_loader)
    assert fast.agreement >= 99.5
    assert fast.top1 == pytest.approx(result.quant_top1, abs=1.0)
    assert fast.images_per_s > 0


@pytest.mark.parametrize("flag", ["--qronos=True", "--bn_corr=True"], ids=["qronos", "bn_corr"])
def test_each_new_ptq_flag_runs_to_an_export_that_passes_the_checks(run_demo, tmp_path, flag):
    result = run_demo(tmp_path / "model.onnx", flag, *QUICK_PTQ, "--check_export=True",
                      "--check_finn=False")
    assert flag[2:].split("=")[0] in result.seconds  # the pass ran, as its own stage
    assert result.quant_top1 > 50.0
    assert result.report is not None and result.report.ok, str(result.report)


def test_a_failing_timed_demo_run_is_reported_not_raised(monkeypatch):
    def failing_run(command, **kwargs):
        return subprocess.CompletedProcess(command, 2, b"", b"loading\nerror: --cache_dir: broken\n")

    monkeypatch.setattr(benchmark.subprocess, "run", failing_run)
    seconds, failure = benchmark.demo_run_seconds(["--cache_dir=/nowhere"], runs=3)
    assert seconds == []
    assert failure[1] == "exit status 2: error: --cache_dir: broken"
    assert "--cache_dir=/nowhere" in failure[0]["demo runs"]


def test_finn_section_reports_each_settings_estimates_beside_its_accuracy(
        tmp_path, cache_dir, finn_build_run, monkeypatch):
    # The FINN build of each row is the session's real one (finn_build_run, ~2 minutes); here,
    # what the benchmark makes of it: the row, the CSV, the table in RESULTS.md and the plot.
    import finn_build
    result, _ = finn_build_run
    built = []
    monkeypatch.setattr(finn_build, "main", lambda args: built.append(args.model) or result)
    run_benchmark(tmp_path, cache_dir, "--bits=W8A8", "--ptq=none", "--finn_bits=W8A8",
                  "--fast_eval=False")
    (row,) = list(csv.DictReader(open(tmp_path / benchmark.FINN_CSV_NAME, newline="")))
    assert len(built) == 1 and row["bits"] == "W8A8" and row["finn_checks"] == "passed"
    totals = result.estimates["totals"]
    assert (row["LUT"], row["DSP"]) == (f"{totals['LUT']:.0f}", f"{totals['DSP']:.0f}")
    assert float(row["estimated_fps"]) == pytest.approx(result.estimates["estimated_fps"], abs=0.5)
    report = (tmp_path / "RESULTS.md").read_text()
    assert "## FINN: hardware cost per bit-width setting" in report
    assert f"| W8A8 | {benchmark.BIT_DESCRIPTIONS['W8A8']} |" in report
    assert (tmp_path / benchmark.FINN_PLOT_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_report_includes_bench_gpxq_side_by_side_table_when_measured(tmp_path):
    report = tmp_path / benchmark.GPXQ_REPORT_NAME
    assert benchmark.gpxq_text(report) == []
    report.write_text("# GPFQ and Qronos: Brevitas vs fast\n\n| bits | speed-up |\n|---|---|\n| PW4 | 27.4x |\n")
    section = "\n".join(benchmark.gpxq_text(report))
    assert section.startswith("## GPFQ and Qronos") and "| PW4 | 27.4x |" in section
