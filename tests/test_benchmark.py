"""benchmark.py writes its table, CSV and plot and resumes without redoing rows, unless the code
that measured them changed; fast_eval agrees with the Brevitas model; each PTQ flag added for the
benchmark runs to an export that passes the demo's export checks."""
import csv
import subprocess
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import torch

import benchmark
import bench.finn_estimates
import bench.grid
import bench.gpxq_speed
import bench.rows
import bench.speed
import finn_mobilenetv2 as demo
from bench.section_code import code_files, code_hash
from bench.context import Context
from bench.grid import BIT_SETTINGS
from bench.sections import section
from finn_demo.testing.suite import SMALL
from finn_demo.fast_eval import fast_evaluate

GRID_CSV, FINN_CSV, SPEED_CSV = (section(name).csv for name in ("grid", "finn", "speed"))
QUICK_PTQ = ["--calib_size=128"]  # GPxQ re-runs the model per layer: keep calibration small


def run_benchmark(out_dir, cache_dir, *flags):
    args, passed = benchmark.make_args(
        [f"--out_dir={out_dir}", f"--cache_dir={cache_dir}", *SMALL, "--calib_size=128",
         "--speed=False", "--finn_bits=", "--gpxq=False", "--imagenet_calib_sizes=", "--seeds=",
         "--checks_bits=", "--qat_bits=", "--qat_time_devices=", *flags])
    return benchmark.main(args, passed, command="python benchmark.py (test)")


def csv_rows(out_dir):
    with open(out_dir / GRID_CSV, newline="") as file:
        return list(csv.DictReader(file))


GRID = ["--bits=W8A8", "--ptq=none,bias_corr"]


@contextmanager
def counting_demo_runs(fail_on=None):
    """The demo runs benchmark.py makes, listed; the run with the flag `fail_on` set is stopped."""
    calls = []
    real_main = demo.main

    def counting_main(args):
        calls.append(args)
        if fail_on and getattr(args, fail_on):
            raise KeyboardInterrupt
        return real_main(args)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(demo, "main", counting_main)
        yield calls


@pytest.fixture(scope="module")
def resumed_grid(tmp_path_factory, cache_dir):
    """A two-row grid interrupted in its second row, then run again: what each run left."""
    out_dir = tmp_path_factory.mktemp("resumed_grid")
    with counting_demo_runs(fail_on="bias_corr"), pytest.raises(KeyboardInterrupt):
        run_benchmark(out_dir, cache_dir, *GRID)
    interrupted = SimpleNamespace(rows=csv_rows(out_dir), tmp_files=list(out_dir.glob(".*.tmp")))
    with counting_demo_runs() as calls:
        rows, _ = run_benchmark(out_dir, cache_dir, *GRID)
    return SimpleNamespace(out_dir=out_dir, interrupted=interrupted, resumed_calls=calls, rows=rows,
                           saved_rows=csv_rows(out_dir))


def test_an_interrupted_benchmark_keeps_finished_rows_and_resumes_without_redoing_them(
        resumed_grid, cache_dir):
    grid, tmp_path = resumed_grid, resumed_grid.out_dir
    assert [row["ptq"] for row in grid.interrupted.rows] == ["none"]
    assert not grid.interrupted.tmp_files  # the CSV was replaced whole, no partial file
    assert [call.bias_corr for call in grid.resumed_calls] == [True]  # only the missing row ran
    rows = grid.rows
    assert [row["ptq"] for row in rows] == ["none", "bias_corr"]
    assert [row["ptq"] for row in grid.saved_rows] == ["none", "bias_corr"]
    # ... and the finished grid's figures, report and plot
    row = rows[0]
    assert float(row["float_top1"]) > 80.0
    drop = float(row["float_top1"]) - float(row["quant_top1"])
    assert float(row["drop"]) == pytest.approx(drop, abs=0.011)
    assert float(row["quant_ips_ort"]) > 0 and float(row["ort_agreement"]) >= 99.5
    assert 95.0 <= float(row["float_agreement"]) <= 100.0 and float(row["sqnr_db"]) > 10.0
    assert {"s_calibration", "s_quantized_evaluation", "s_export"} <= set(row)
    report = (tmp_path / "RESULTS.md").read_text()
    assert "| W8A8 | none |" in report and "| W8A8 | bias_corr |" in report
    assert "python benchmark.py (test)" in report
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=bench.rows.ROOT).stdout.strip()
    assert f"at commit {commit}" in report  # the code the table was made at ...
    assert f"`{rows[0]['code']}`" in report and len(rows[0]["code"]) == 12  # ... and the grid's code hash
    assert f"`{rows[0]['model']}`" in report  # the model every section measured
    assert (tmp_path / bench.grid.PLOT_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    with counting_demo_runs() as calls:
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


def test_parallel_grid_jobs_measure_the_same_rows_as_one_process(tmp_path, cache_dir, resumed_grid):
    serial = resumed_grid.rows
    parallel, _ = run_benchmark(tmp_path, cache_dir, *GRID, "--grid_jobs=2")
    assert sorted(row["ptq"] for row in csv_rows(tmp_path)) == ["bias_corr", "none"]
    assert [row["ptq"] for row in parallel] == ["none", "bias_corr"]  # the grid's order, not the finish order
    threads = str(max(1, torch.get_num_threads() // 2))  # the cores shared between the two jobs
    assert [row["threads"] for row in parallel] == [threads, threads]
    for one, other in zip(serial, parallel):  # other thread counts: at most one image may flip
        assert float(one["quant_top1"]) == pytest.approx(float(other["quant_top1"]), abs=0.6)


def test_fast_eval_agrees_with_the_brevitas_model_on_top1_at_4_bit_activations(run_demo, tmp_path, w8a8):
    # (8 bits: test_eval_backend.py, on the session's W8A8 model)
    result = run_demo(tmp_path / "model.onnx", *BIT_SETTINGS["PW4A4"])
    fast = fast_evaluate(result.model, result.val_loader)
    assert fast.agreement >= 99.5
    assert fast.top1 == pytest.approx(result.quant_eval.top1, abs=1.0)
    assert fast.images_per_s > 0
    # Fewer bits, further from the float model: the logits' SQNR orders the two settings
    # even where their top-1 would tie.
    assert result.quant_eval.float_fidelity.sqnr_db < w8a8.quant_eval.float_fidelity.sqnr_db - 3.0


def test_the_best_ptq_setting_is_ranked_by_top1_then_by_logit_sqnr():
    rows = [{"ptq": "gpfq", "quant_top1": "97.79", "sqnr_db": "18.20"},
            {"ptq": "qronos", "quant_top1": "97.79", "sqnr_db": "19.05"},
            {"ptq": "none", "quant_top1": "96.98", "sqnr_db": "25.00"},
            {"ptq": "old", "quant_top1": "97.79"}]  # a row measured before the SQNR column
    assert [row["ptq"] for row in bench.grid.ranked(rows)] == ["qronos", "gpfq", "old", "none"]


@pytest.mark.parametrize("flag", ["--qronos=True", "--bn_corr=True"], ids=["qronos", "bn_corr"])
def test_each_new_ptq_flag_runs_to_an_export_that_passes_the_checks(run_demo, tmp_path, flag):
    result = run_demo(tmp_path / "model.onnx", flag, *QUICK_PTQ, "--check_export=True",
                      "--check_finn=False")
    assert flag[2:].split("=")[0] in result.seconds  # the pass ran, as its own stage
    assert result.quant_eval.top1 > 50.0
    assert result.report is not None and result.report.ok, str(result.report)


def test_a_failing_timed_demo_run_is_reported_not_raised(monkeypatch):
    def failing_run(command, **kwargs):
        return subprocess.CompletedProcess(command, 2, b"", b"loading\nerror: --cache_dir: broken\n")

    monkeypatch.setattr(bench.speed.subprocess, "run", failing_run)
    seconds, failure = bench.speed.demo_run_seconds(["--cache_dir=/nowhere"], runs=3)
    assert seconds == []
    assert failure[1] == "exit status 2: error: --cache_dir: broken"
    assert "--cache_dir=/nowhere" in failure[0]["demo runs"]


def test_finn_section_reports_each_setting_and_board_with_its_fit(
        tmp_path, cache_dir, finn_build_run, monkeypatch):
    # The FINN build of each row is the session's real one (finn_build_run, ~2 minutes, at 32x32);
    # here, what the benchmark makes of it: the rows, the CSV and the table in RESULTS.md.
    import bench.finn_estimates
    import bench.imagenet_shaped
    import finn_build
    result, _ = finn_build_run
    built, exported = [], []
    monkeypatch.setattr(bench.imagenet_shaped, "make_folder", lambda folder: tmp_path)
    monkeypatch.setattr(bench.imagenet_shaped, "make_weights", lambda path, data: path)
    monkeypatch.setattr(bench.imagenet_shaped, "load_model", lambda path: torch.nn.Linear(2, 2))
    monkeypatch.setattr(bench.finn_estimates, "export", lambda folder, data, weights, bits:
                        exported.append(bits) or folder / bits / "model.onnx")
    monkeypatch.setattr(finn_build, "main", lambda args: built.append(args.board) or result)
    run_benchmark(tmp_path, cache_dir, "--bits=", "--finn_bits=W4A4", "--finn_boards=ZCU104,U250")
    rows = list(csv.DictReader(open(tmp_path / FINN_CSV, newline="")))
    assert built == ["ZCU104", "U250"] and [row["board"] for row in rows] == built
    estimates = result.estimates
    for row in rows:
        assert row["bits"] == "W4A4" and row["finn_checks"] == "passed" and row["fits"] == "yes"
        assert row["LUT"] == f"{estimates['totals']['LUT']:.0f}" and row["model"] and row["code"]
        assert float(row["estimated_fps"]) == pytest.approx(estimates["estimated_fps"], abs=0.5)
    report = (tmp_path / "RESULTS.md").read_text()
    assert "## FINN: MobileNetV2 at 224x224 fitted to each board" in report
    assert f"| W4A4 | ZCU104 | yes | {rows[0]['estimated_fps']} |" in report
    assert "- ZCU104: " in report and "(goal 450, target 1000)" in report
    assert "| - (not in the grid) |" in report  # --bits= ran no grid row: no accuracy, no plot
    assert not (tmp_path / bench.finn_estimates.PLOT_NAME).exists()


def test_finn_table_and_plot_put_each_settings_best_grid_accuracy_beside_its_design(tmp_path):
    from bench.finn_estimates import best_accuracy, finn_plot, finn_table
    grid = [{"bits": "W4A4", "ptq": "none", "quant_top1": "85.31"},
            {"bits": "W4A4", "ptq": "gpfq", "quant_top1": "93.76"},
            {"bits": "W8A8", "ptq": "none", "quant_top1": "96.58"}]
    finn = [{"bits": bits, "board": board, "fits": fits, "estimated_fps": fps,
             "finn_checks": "passed", "s_build": "1"}
            for bits, board, fits, fps in [("W4A4", "ZCU104", "yes", "1701"),
                                           ("W8A8", "ZCU104", "no", "10"),
                                           ("W4A4", "U250", "yes", "1768"),
                                           ("W3A3", "U250", "yes", "2000")]]
    accuracy = best_accuracy(grid)
    # a thresholds-only build of a setting ("+thr") has its setting's accuracy
    assert accuracy == {"W4A4": (93.76, "gpfq"), "W8A8": (96.58, "none"),
                        "W4A4+thr": (93.76, "gpfq"), "W8A8+thr": (96.58, "none")}
    header, cells = finn_table(finn, accuracy)
    column = header.index("digits top-1 % (best PTQ)")
    assert [row[column] for row in cells] == ["93.76 (gpfq)", "96.58 (none)", "93.76 (gpfq)",
                                              "- (not in the grid)"]
    assert finn_plot(finn, accuracy, tmp_path / "finn.png")
    assert (tmp_path / "finn.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not finn_plot(finn, {}, tmp_path / "none.png") and not (tmp_path / "none.png").exists()


def test_the_front_holds_the_fitting_settings_no_other_beats_on_both_speed_and_accuracy():
    from bench.finn_estimates import front
    accuracy = {"W4A4": (95.0, "qronos"), "PW4A4": (96.0, "qronos"), "W4A4+add8": (96.5, "gpfq"),
                "W3A3": (90.0, "none"), "W8A8": (97.0, "none")}
    finn = [{"bits": bits, "board": board, "fits": fits, "estimated_fps": fps}
            for bits, board, fits, fps in [
                ("W4A4", "ZCU104", "yes", "1701"), ("PW4A4", "ZCU104", "yes", "1200"),
                ("W3A3", "ZCU104", "yes", "1500"),  # slower and less accurate than W4A4
                ("W8A8", "ZCU104", "no", "600"),  # does not fit: never on the front
                ("W4A4", "U250", "yes", "3916"), ("W4A4+add8", "U250", "yes", "3916")]]
    assert front(finn, accuracy) == {"ZCU104": ["W4A4", "PW4A4"], "U250": ["W4A4+add8"]}


def test_a_section_turned_off_keeps_the_rows_its_csv_holds_in_the_report(cache_dir, tmp_path):
    import shutil
    shutil.copy(bench.rows.ROOT / "results" / SPEED_CSV, tmp_path)
    run_benchmark(tmp_path, cache_dir, "--bits=")  # --speed=False, --gpxq=False, ...
    report = (tmp_path / "RESULTS.md").read_text()
    section = report.split("## Speed", 1)[1]
    assert f"Not re-run by this command: the rows {SPEED_CSV} already held" in section
    kept = list(csv.DictReader(open(tmp_path / SPEED_CSV, newline="")))
    assert all(f"| {row['ips_float_eager']} |" in section for row in kept)
    assert "## GPFQ" not in report and "## FINN" not in report  # no CSV there: nothing to keep


def test_kept_rows_are_each_keys_newest_row_of_the_newest_codes_models(tmp_path):
    from bench.report import kept_rows
    row = {"bits": "W8A8", "ptq": "none", "model": "m", "code": "c1", "commit": "a", "top1": "96"}
    rows = [{**row, "model": "old machine's"}, row, {**row, "ptq": "gpfq"},
            {**row, "ptq": "qronos"},
            {**row, "ptq": "gpfq", "code": "c2", "commit": "b", "top1": "97"}]  # a partial re-run
    bench.rows.write_rows(tmp_path / "benchmark.csv", rows)
    kept = kept_rows(tmp_path / "benchmark.csv")
    assert [(row["ptq"], row["code"]) for row in kept] == [("none", "c1"), ("qronos", "c1"),
                                                           ("gpfq", "c2")]
    assert kept[-1]["top1"] == "97"


def test_a_run_without_grid_rows_shows_the_grid_its_csv_holds(cache_dir, tmp_path):
    import shutil
    shutil.copy(bench.rows.ROOT / "results" / GRID_CSV, tmp_path)
    run_benchmark(tmp_path, cache_dir, "--bits=")
    report = (tmp_path / "RESULTS.md").read_text()
    assert f"The grid was not re-run by this command: the rows {GRID_CSV} already held" in report
    held = csv_rows(tmp_path)
    assert all(f"| {row['bits']} | {row['ptq']} |" in report for row in held)
    assert (tmp_path / bench.grid.PLOT_NAME).exists()


def test_finn_rows_carry_the_simulated_layers_and_the_restated_frame_rate():
    from types import SimpleNamespace

    from bench.finn_estimates import finn_table, simulated_columns
    estimates = {"clock_ns": 5.0, "max_cycles": 1000, "estimated_fps": 200000.0,
                 "layers": [{"name": "MVAU_rtl_0", "cycles": 1000},
                            {"name": "ConvolutionInputGenerator_rtl_0", "cycles": 900}]}
    simulated = {"simulator": "Verilator 5.048", "layers": [
        {"name": "ConvolutionInputGenerator_rtl_0", "cycles": 1250, "estimated_cycles": 900,
         "bit_exact": True},
        {"name": "MVAU_rtl_0", "cycles": 1000, "estimated_cycles": 1000, "bit_exact": False}]}
    row = simulated_columns(SimpleNamespace(simulated=simulated, estimates=estimates))
    assert row["simulated_fps"] == "160000" and row["sim_bit_exact"] == "1/2"
    assert row["sim_layers"] == "ConvolutionInputGenerator_rtl_0 1250 (900); MVAU_rtl_0 1000 (1000)"
    assert simulated_columns(SimpleNamespace(simulated=None, estimates=estimates)) == {}
    header, (cells,) = finn_table([{"bits": "W4A4", "board": "ZCU104", "estimated_fps": "200000",
                                    "finn_checks": "passed", "s_build": "1", **row}], {})
    assert cells[header.index("simulated frames/s")] == "160000"
    assert cells[header.index("bit-exact in Verilator")] == "1/2"


def test_a_thresholds_only_finn_setting_builds_its_settings_export_with_requant_off(monkeypatch,
                                                                                   tmp_path):
    import finn_build
    settings = bench.finn_estimates
    assert settings.FINN_SETTINGS["W8A8+thr"] == settings.FINN_SETTINGS["W8A8"]
    assert settings.setting_flags("W8A8+thr") == settings.setting_flags("W8A8")
    built = {}
    monkeypatch.setattr(settings, "export", lambda folder, data, weights, bits: (
        folder / settings.export_name(bits) / "model.onnx"))
    monkeypatch.setattr(finn_build, "main", lambda args: built.setdefault(args.model, []).append(
        args.requant) or SimpleNamespace(failures=[], estimates=None, simulated=None))
    for name in ("W8A8", "W8A8+thr"):
        settings._measure({"bits": name, "board": "ZCU104", "verilator_layers": ""}, tmp_path,
                          None, None)
    assert built == {str(tmp_path / "W8A8" / "model.onnx"): [True, False]}


def test_unknown_finn_board_is_refused_before_any_row(cache_dir, tmp_path):
    pytest.importorskip("finn")
    with pytest.raises(benchmark.ConfigError, match="--finn_boards=ZCU999"):
        benchmark.make_args([f"--cache_dir={cache_dir}", "--finn_boards=ZCU999"])


def test_the_imagenet_shaped_model_has_non_degenerate_logits():
    # Torchvision's random initialisation gives logits of about 1e-9 at 224x224 (BatchNorm's
    # initial statistics let the activations shrink layer by layer); recalibrated, about 0.1-1.
    from torchvision.models import mobilenet_v2
    from bench.imagenet_shaped import recalibrate_batchnorm
    torch.manual_seed(0)
    images = torch.rand(4, 3, 224, 224)
    with torch.no_grad():
        before = mobilenet_v2().eval()(images[:2])
        model = recalibrate_batchnorm(mobilenet_v2(), [(images, None)])
        after = model(images[:2])
    assert before.abs().max() < 1e-4 < 1e-2 < after.std(dim=1).min()


def test_a_row_measured_at_the_same_code_is_resumed_and_at_other_code_measured_again(tmp_path):
    measured = []

    def measure(key):
        measured.append(key["bits"])
        return {"top1": str(len(measured))}

    path, keys = tmp_path / "rows.csv", [{"bits": "W8A8"}, {"bits": "PW4"}]
    bench.rows.resumable(path, keys, measure, "test", code="aaa")
    rows, _ = bench.rows.resumable(path, keys, measure, "test", code="aaa")
    assert measured == ["W8A8", "PW4"] and [row["top1"] for row in rows] == ["1", "2"]  # resumed
    rows, _ = bench.rows.resumable(path, keys[:1], measure, "test", code="bbb")
    assert measured == ["W8A8", "PW4", "W8A8"]  # stale: measured again ...
    assert [(row["bits"], row["code"], row["top1"]) for row in rows] == [("W8A8", "bbb", "3")]
    saved = [(row["bits"], row["code"]) for row in bench.rows.read_rows(path)]
    assert sorted(saved) == [("PW4", "aaa"), ("W8A8", "bbb")]  # ... and replaces the stale row


def test_a_row_saved_before_rows_had_a_code_is_measured_again(tmp_path):
    path = tmp_path / "rows.csv"
    bench.rows.write_rows(path, [{"bits": "W8A8", "top1": "old"}])
    rows, _ = bench.rows.resumable(path, [{"bits": "W8A8"}], lambda key: {"top1": "new"}, "test", "aaa")
    assert [row["top1"] for row in rows] == ["new"]
    assert [row["top1"] for row in bench.rows.read_rows(path)] == ["new"]


def write_files(root, files):
    """A tiny repository: {path: text} written under `root`."""
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


# A demo whose optional FINN build is a function-level import, as finn_mobilenetv2.py's.
TINY_REPO = {
    "finn_mobilenetv2.py": "from finn_demo.data import datasets\n\ndef build():\n    import finn_build\n",
    "finn_demo/data/datasets.py": "import torch\n",
    "finn_demo/hw/fit.py": "RUNTIME_FILES = ('rtl/core.sv',)\n",
    "finn_demo/hw/rtl/core.sv": "module core; endmodule\n",
    "finn_build.py": "def main():\n    from finn_demo.hw import fit\n",
    "bench/rows.py": "# rows\n",
    "bench/grid.py": "import finn_mobilenetv2 as demo\nfrom bench.rows import ROOT\n",
    "bench/speed.py": "from bench import grid\n",
    "bench/finn_estimates.py": "from bench.grid import x\n\ndef measure():\n    import finn_build\n",
    "README.md": "not code",
}


def test_the_code_hash_changes_with_any_code_file_and_with_the_section_module(tmp_path, monkeypatch):
    write_files(tmp_path, TINY_REPO)
    monkeypatch.setattr(bench.rows, "ROOT", tmp_path)
    grid = code_hash("bench.grid")
    assert grid != code_hash("bench.speed")
    (tmp_path / "README.md").write_text("changed, but not code")
    assert code_hash("bench.grid") == grid
    (tmp_path / "finn_demo/data/datasets.py").write_text("changed")  # imported by the demo
    assert code_hash("bench.grid") != grid


def test_only_the_finn_section_hashes_the_finn_build_code(tmp_path, monkeypatch):
    write_files(tmp_path, TINY_REPO)
    monkeypatch.setattr(bench.rows, "ROOT", tmp_path)
    assert code_files("bench.grid") == ["bench/grid.py", "bench/rows.py", "finn_demo/data/datasets.py",
                                        "finn_mobilenetv2.py"]
    assert {"finn_build.py", "finn_demo/hw/fit.py"} <= set(code_files("bench.finn_estimates"))
    grid, finn = code_hash("bench.grid"), code_hash("bench.finn_estimates")
    (tmp_path / "finn_demo/hw/fit.py").write_text("changed")
    assert code_hash("bench.grid") == grid
    assert code_hash("bench.finn_estimates") != finn


def test_the_files_a_module_reads_when_it_runs_are_its_sections_code(tmp_path, monkeypatch):
    write_files(tmp_path, TINY_REPO)
    monkeypatch.setattr(bench.rows, "ROOT", tmp_path)
    assert "finn_demo/hw/rtl/core.sv" in code_files("bench.finn_estimates")
    finn = code_hash("bench.finn_estimates")
    (tmp_path / "finn_demo/hw/rtl/core.sv").write_text("module core; wire w; endmodule\n")
    assert code_hash("bench.finn_estimates") != finn


def test_the_real_finn_section_hashes_the_finn_build_and_the_grid_does_not():
    finn, grid = set(code_files("bench.finn_estimates")), set(code_files("bench.grid"))
    build = {"finn_build.py", "finn_demo/hw/steps.py", "finn_demo/hw/build.py", "finn_demo/hw/fit.py"}
    assert build <= finn and not build & grid
    assert {"finn_demo/hw/rtl/requant_exact.sv", "finn_demo/hw/verilator_tb/testbench.cpp"} <= finn
    assert {"bench/grid.py", "finn_mobilenetv2.py", "quant_utils.py", "finn_demo/quant/ptq.py"} <= grid


def test_gpxq_rows_alternate_the_implementations_and_count_differing_integer_weights(monkeypatch):
    calls = []

    def fake_run(algorithm, impl, model, loader, args):
        calls.append(impl)
        seconds = {"brevitas": [30.0, 10.0, 11.0], "fast": [2.0, 1.0, 3.0]}[impl][calls.count(impl) - 1]
        weights = torch.tensor([1, 2, 3]) if len(calls) != 4 else torch.tensor([1, 2, 4])
        return seconds, {"conv": weights}

    monkeypatch.setattr(bench.gpxq_speed, "calibrated_model", lambda flags: (None, None, None))
    monkeypatch.setattr(bench.gpxq_speed, "timed_run", fake_run)
    row = bench.gpxq_speed.compare_row(
        {"bits": "PW4", "algorithm": "gpfq", "calib_size": "128", "repeats": "3"}, passed=[])
    assert calls == ["brevitas", "fast"] * 3
    assert (row["brevitas_s"], row["fast_s"], row["speedup"]) == ("11.0", "2.0", "5.5")  # medians
    assert row["brevitas_runs_s"] == "30.0 10.0 11.0"
    assert (row["differing_int_weights"], row["layers_differing"]) == ("1", "conv:1")
    assert row["threads"] == str(torch.get_num_threads())


def test_prune_keeps_only_the_rows_of_the_newest_code(tmp_path, capsys):
    import bench.prune
    old = {"bits": "W8A8", "ptq": "none", "model": "oldmodel", "code": "c1", "quant_top1": "96.58"}
    rows = [old, {**old, "ptq": "gpfq"}, {**old, "ptq": "qronos", "model": "newmodel"},  # old flags
            {**old, "model": "newmodel", "code": "c2"},
            {**old, "ptq": "gpfq", "model": "random (seed 0)", "code": "c2"}]
    bench.rows.write_rows(tmp_path / "benchmark.csv", rows)
    bench.rows.write_rows(tmp_path / "imagenet_times.csv", [{"run": "none", "code": "c1"}])
    bench.rows.write_rows(tmp_path / "qat.csv", rows)
    bench.prune.main({"out_dir": str(tmp_path), "csv": "qat.csv"})  # that CSV alone
    assert len(bench.rows.read_rows(tmp_path / "qat.csv")) == 2
    assert len(bench.rows.read_rows(tmp_path / "benchmark.csv")) == 5
    bench.prune.main({"out_dir": str(tmp_path), "csv": ""})
    kept = bench.rows.read_rows(tmp_path / "benchmark.csv")
    assert [(row["ptq"], row["model"]) for row in kept] == [("none", "newmodel"), ("gpfq", "random (seed 0)")]
    assert bench.rows.read_rows(tmp_path / "imagenet_times.csv") == [{"run": "none", "code": "c1"}]
    assert "dropped 3" in capsys.readouterr().out
    with pytest.raises(demo.ConfigError, match="no CSV files"):
        bench.prune.main({"out_dir": str(tmp_path / "empty"), "csv": ""})
    with pytest.raises(demo.ConfigError, match="no seeds.csv there"):
        bench.prune.main({"out_dir": str(tmp_path), "csv": "seeds.csv"})


# ------------------------------------------------------------------------------------ seeds
def seed_row(bits, ptq, seed, drop, sqnr):
    return {"bits": bits, "ptq": ptq, "seed": str(seed), "model": f"m{seed}", "code": "c",
            "float_top1": "97.00", "drop": f"{drop:.2f}", "sqnr_db": f"{sqnr:.2f}",
            "float_agreement": "98.00"}


def test_seeds_report_the_mean_and_sd_and_a_winner_only_beyond_the_spread():
    import bench.seeds
    drops = {("W4A4", "none"): [6.0, 8.0, 10.0], ("W4A4", "gpfq"): [2.0, 2.5, 3.0],
             ("W4A4", "qronos"): [3.0, 4.0, 5.0],  # gpfq leads by 1.5 points, sd 1.0: a win
             ("PW4A4", "gpfq"): [1.0, 1.4, 1.8], ("PW4A4", "qronos"): [1.2, 1.2, 1.2]}  # 0.0 vs 0.4: noise
    rows = [seed_row(bits, ptq, seed, drop, 20.0 - drop) for (bits, ptq), values in drops.items()
            for seed, drop in enumerate(values)]
    summary = bench.seeds.summarize(rows)
    gpfq = summary["W4A4", "gpfq"]
    assert gpfq["seeds"] == [0, 1, 2] and gpfq["drop"] == pytest.approx(2.5)
    assert gpfq["drop_sd"] == pytest.approx(0.5) and gpfq["sqnr_db"] == pytest.approx(17.5)
    assert bench.seeds.winner(summary, "W4A4") == ("gpfq", "qronos")
    assert (bench.seeds.verdict(summary, "W4A4") ==
            "gpfq beats qronos by 1.50 points, 1.5 x the larger sd (1.00)")
    # equal mean drops: the higher mean SQNR wins, and the lead is within the spread
    assert bench.seeds.winner(summary, "PW4A4") == ("qronos", "gpfq")
    assert "within the spread (larger sd 0.40)" in bench.seeds.verdict(summary, "PW4A4")
    text = "\n".join(bench.seeds.seeds_text(rows))
    assert "| W4A4 | gpfq | 0 1 2 | 97.00 | 2.50 +- 0.50 | 17.50 +- 0.50 | 98.00 |" in text
    assert "| W4A4 | gpfq beats qronos by 1.50 points" in text
    assert "seed 0 `m0`, seed 1 `m1`, seed 2 `m2`" in text
    one_seed = bench.seeds.summarize([row for row in rows if row["seed"] == "0"])
    assert bench.seeds.verdict(one_seed, "W4A4").endswith("on one seed: no spread to compare")


def test_seeds_flags_are_refused_in_one_line_before_any_row():
    for argv, fragment in [(["--seeds_bits=W9A9"], "--seeds_bits: unknown W9A9"),
                           (["--seeds_ptq=gpfq,nope"], "--seeds_ptq: unknown nope"),
                           (["--seeds=0,1"], "--seeds=0,1: seed 0 is the pass-through model's"),
                           (["--digits_seed=2", "--seeds=1,2"], "--seeds=1,2: seed 2 is the pass-through"),
                           (["--seeds=1,x"], "--seeds=1,x: give digits training seeds as integers"),
                           (["--gptq=True", "--bits=W8A8", "--ptq=none", "--seeds_ptq=none,gpfq"],
                            "(in the row --seeds_bits=W4A4 --seeds_ptq=gpfq)")]:
        with pytest.raises(demo.ConfigError) as caught:
            benchmark.make_args(argv)
        assert fragment in str(caught.value) and "\n" not in str(caught.value)
    args, _ = benchmark.make_args(["--digits_seed=2", "--seeds=0,1"])
    assert args["seeds"] == [0, 1]
    assert benchmark.make_args(["--seeds="])[0]["seeds"] == []


def test_seeds_section_reuses_the_grids_rows_and_runs_the_other_seeds_with_their_flag(tmp_path, monkeypatch):
    import bench.seeds
    calls = []

    def fake_run_row(key, passed):
        calls.append((key["seed"], key["ptq"], key["model"], passed[-1]))
        return {"float_top1": "97.00", "drop": "1.00", "sqnr_db": "15.00", "float_agreement": "98.00"}

    monkeypatch.setattr(bench.seeds, "run_row", fake_run_row)
    monkeypatch.setattr(bench.seeds, "demo_model_hash", lambda flags: "model_of_" + flags[-1])
    args = {"seeds": [1], "seeds_bits": ["W4A4"], "seeds_ptq": ["none", "gpfq"], "grid_jobs": 1,
            "grid_threads": 0}
    common = {"flags": "--val_size=100", "model": "m0"}
    grid_rows = [{**seed_row("W4A4", "none", 0, 3.0, 12.0), "flags": common["flags"]},
                 {**seed_row("PW4", "none", 0, 1.0, 20.0), "flags": common["flags"]}]
    path = tmp_path / "seeds.csv"
    context = Context(args, ["--val_size=100"], common, tmp_path, path, {"grid": grid_rows})
    rows, failures = bench.seeds.seeds_section(context)
    assert not failures
    assert calls == [("0", "gpfq", "m0", "--digits_seed=0"),  # not in the grid: measured here
                     ("1", "none", "model_of_--digits_seed=1", "--digits_seed=1"),
                     ("1", "gpfq", "model_of_--digits_seed=1", "--digits_seed=1")]
    assert [(row["seed"], row["ptq"]) for row in rows] == [("0", "none"), ("1", "none"), ("0", "gpfq"),
                                                           ("1", "gpfq")]
    assert rows[0]["drop"] == "3.00"  # the grid's own row
    assert rows[1]["flags"] == "--val_size=100 --digits_seed=1"
    assert len(bench.rows.read_rows(path)) == 3
    bench.seeds.seeds_section(context)
    assert len(calls) == 3  # resumed, not measured again


def test_a_section_is_one_registry_entry_that_main_runs_in_its_place_and_stale_checks(
        cache_dir, tmp_path, monkeypatch):
    import bench.sections
    import bench.stale
    seen = []

    def run(context):
        seen.append(sorted(context.rows))  # the sections before it, by name
        return bench.rows.resumable(context.path, [{"n": "1"}], lambda key: {"value": "42"},
                                    "dummy", "dummy code")

    def render(rows, context):
        return ["## Dummy section", "", *[f"value {row['value']}" for row in rows], ""]
    dummy = bench.sections.Section("dummy", "dummy.csv", run, render, flags=("fast_eval",))
    registry = bench.sections.SECTIONS
    monkeypatch.setattr(bench.sections, "SECTIONS", (registry[0], dummy, *registry[1:]))
    run_benchmark(tmp_path, cache_dir, "--bits=")
    assert seen == [["grid"]]  # after the grid, before the others
    report = (tmp_path / "RESULTS.md").read_text()
    assert report.index("## Bit-width settings") < report.index("## Dummy section\n\nvalue 42")
    assert [status.name for status in bench.stale.statuses(tmp_path)] == ["dummy.csv"]
    run_benchmark(tmp_path, cache_dir, "--bits=", "--fast_eval=False")  # off: its CSV's rows
    assert "*Not re-run by this command: the rows dummy.csv already held.*" in (
        tmp_path / "RESULTS.md").read_text()


# -------------------------------------------------------------------------------------- QAT
def test_qat_section_measures_every_model_itself_each_with_its_seed_flag(tmp_path, monkeypatch):
    import bench.qat
    import bench.seeds
    calls = []

    def fake_run_row(key, passed):
        calls.append((key["seed"], key["ptq"], key["model"], passed[-1]))
        seconds = {"s_demo_total": "300.0", "s_qat": "240.0"} if key["ptq"].endswith("+qat") else {
            "s_demo_total": "20.0"}
        return {"float_top1": "97.00", "drop": "0.50" if "qat" in key["ptq"] else "2.00",
                "sqnr_db": "12.00", "float_agreement": "98.00", **seconds}

    monkeypatch.setattr(bench.seeds, "run_row", fake_run_row)
    monkeypatch.setattr(bench.seeds, "demo_model_hash", lambda flags: "model_of_" + flags[-1])
    qat = bench.grid.QAT
    args = {"seeds": [1], "qat_bits": ["W3A3"], "qat_ptq": ["none", qat], "grid_jobs": 1,
            "grid_threads": 0}
    common = {"flags": "--val_size=100", "model": "m0"}
    grid_rows = [{**seed_row("W3A3", "none", 0, 3.0, 12.0), "flags": common["flags"]}]
    context = Context(args, ["--val_size=100"], common, tmp_path, tmp_path / "qat.csv",
                      {"grid": grid_rows})
    rows, failures = bench.qat.qat_section(context)
    assert not failures
    # the pass-through model's rows too are measured here, not taken from the grid
    assert calls == [("0", "none", "m0", "--digits_seed=0"), ("0", qat, "m0", "--digits_seed=0"),
                     ("1", "none", "model_of_--digits_seed=1", "--digits_seed=1"),
                     ("1", qat, "model_of_--digits_seed=1", "--digits_seed=1")]
    text = "\n".join(bench.qat.qat_text(rows))
    assert f"| W3A3 | {qat} | 0 1 | 97.00 | 0.50 +- 0.00 | 12.00 +- 0.00 | 300 | 240 |" in text
    assert "| W3A3 | none | 0 1 | 97.00 | 2.00 +- 0.00 | 12.00 +- 0.00 | 20 | - |" in text
    from bench.readme import qat_table
    assert "| W3A3 | 2 | 97.00 | 2.00 +- 0.00 | 2.00 +- 0.00 | 0.50 +- 0.00 | 12.00 +- 0.00 | 4.0 |" in (
        qat_table([*rows, *({**row, "ptq": qat[:-len("+qat")]} for row in rows
                            if row["ptq"] == "none")]))


def test_qat_flags_are_refused_in_one_line_before_any_row():
    cases = [(["--qat_bits=W9A9"], "--qat_bits: unknown W9A9"),
             (["--qat_time_devices=tpu"], "--qat_time_devices=tpu: tpu is no device"),
             (["--qat_time_epochs=1"], "--qat_time_epochs=1: must be 2 or more")]
    if not torch.cuda.is_available():
        cases.append((["--qat_time_devices=cpu,cuda"], "no CUDA GPU is available here"))
    for argv, fragment in cases:
        with pytest.raises(demo.ConfigError) as caught:
            benchmark.make_args(argv)
        assert fragment in str(caught.value) and "\n" not in str(caught.value)
