"""Shared fixtures: one small trained digits model for the whole session, and a demo runner.

The model is trained once per session into a temporary cache, so every test works on real,
non-degenerate numbers without touching the user's cache: MobileNetV2's first 3 stages at
width 0.5 (every layer type and residual structure of the full model in 20 layers instead of 53,
about 97% top-1), 8 epochs. The suite's cost (GPxQ re-runs the model per layer, FINN's graph
passes grow with the square of the node count) follows the layer count. The full-depth export
keeps its own structural tests (`full_depth`: the ImageNet-mode run's 1000-class model).
"""
import contextlib
import fcntl
import os

import pytest

from finn_demo.testing.suite import SMALL, import_finn_steps


# `make test` runs the suite in two pytest-xdist workers. The tests that share one expensive
# result go to one worker together, so it is computed once: FINN's build of the small model,
# the ImageNet-mode run at 224x224, the benchmark grid test_benchmark.py resumes, the FINN build
# of the act_eq export (test_act_eq_finn.py). Each worker computes the cheap ones (its W8A8
# export) itself; the small digits model is trained once for both (cache_dir).
SHARED_GROUPS = {"finn_build_run": "finn", "imagenet_run": "imagenet", "resumed_grid": "grid",
                 "act_eq_export": "act_eq"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the markers
def pytest_collection_modifyitems(items):
    for item in items:
        group = next((name for fixture, name in SHARED_GROUPS.items()
                      if fixture in item.fixturenames), None)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))


if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch
    # One thread per worker: two workers with two threads each would fight over two cores.
    torch.set_num_threads(max(1, torch.get_num_threads() // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """The digits cache, one for make test's workers: the first to get the lock trains the small
    model, the other waits and loads it."""
    import finn_mobilenetv2 as demo  # here, not at the top: collecting a test file stays light
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the workers' common folder
    path = root / "digits_cache"
    path.mkdir(exist_ok=True)
    with open(root / "digits_cache.lock", "w") as lock, one_thread():
        fcntl.flock(lock, fcntl.LOCK_EX)
        demo.load_model_and_data(demo.make_args([f"--cache_dir={path}", *SMALL]))
    return path


@contextlib.contextmanager
def one_thread():
    """Torch on one thread: the float sums of training run in one order, so the suite trains the
    same model whether it runs in make test's workers (one thread each) or alone."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def run_demo(cache_dir):
    """Run the demo on the small digits model with `--name=value` overrides; returns its result."""
    import finn_mobilenetv2 as demo
    def run(output, *overrides):
        return demo.main(demo.make_args(
            [f"--cache_dir={cache_dir}", *SMALL, f"--output={output}", *overrides]))
    return run


@pytest.fixture(scope="session")
def w8a8(run_demo, tmp_path_factory):
    """The demo's default run (8-bit weights and activations), exported once for the session."""
    return run_demo(tmp_path_factory.mktemp("w8a8") / "quant_mobilenet_v2.onnx")


@pytest.fixture(scope="session")
def bias_corrected(run_demo, tmp_path_factory):
    """The default run with bias correction: its Convs carry quantized biases, FINN's harder case."""
    return run_demo(tmp_path_factory.mktemp("bias_corr") / "quant_mobilenet_v2.onnx",
                    "--bias_corr=True")


@pytest.fixture(scope="session")
def full_depth(imagenet_run):
    """The full MobileNetV2 (torchvision's, 1000 classes), bias-corrected, for structural tests:
    the ImageNet-mode run's, as these count and inspect nodes rather than compare numbers."""
    return imagenet_run[0]


@pytest.fixture(scope="session")
def imagenet_weights(tmp_path_factory):
    """A local MobileNetV2 ImageNet-shaped state_dict file (random weights: no download here)."""
    import torch
    from torchvision.models import mobilenet_v2
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2.pth"
    torch.save(mobilenet_v2().state_dict(), path)
    return path


@pytest.fixture(scope="session")
def imagenet_run(imagenet_weights, tmp_path_factory):
    """The demo in ImageNet mode with bias correction, once for the session, on a generated
    folder whose val/ holds 4 images and one undecodable file: (its result, what it printed, the
    warnings' messages, the export, {image file: times it was read})."""
    import collections
    import contextlib
    import io
    import warnings
    import finn_mobilenetv2 as demo
    from finn_demo.data.datasets import ImageNetFolder
    from finn_demo.testing.imagenet_folder import make_imagenet_folder
    root = tmp_path_factory.mktemp("imagenet_run")
    wnids = ["n01440764", "n01443537"]
    data = make_imagenet_folder(root / "imagenet", wnids, wnids)
    (data / "val" / "n01443537" / "broken.JPEG").write_bytes(b"not a jpeg")
    output = root / "imagenet.onnx"
    printed, reads = io.StringIO(), collections.Counter()
    read = ImageNetFolder.__getitem__

    def counted_read(self, index):
        reads[self.samples[index][0]] += 1
        return read(self, index)
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(printed), \
            pytest.MonkeyPatch.context() as patch:
        warnings.simplefilter("always")
        patch.setattr(ImageNetFolder, "__getitem__", counted_read)
        result = demo.main(demo.make_args([
            f"--data_dir={data}", f"--weights={imagenet_weights}", f"--output={output}",
            "--calib_size=4", "--val_size=8", "--batch_size=2", "--workers=0",
            "--agreement_images=2",  # the first batch: the other images are read by one pass only
            "--check_images=1",  # qonnx runs the 224x224 graph node by node: about 3 s per image
            "--device=cpu", "--bias_corr=True"]))
    return result, printed.getvalue(), [str(warning.message) for warning in caught], output, reads


def without_metadata(path, to):
    """A copy of the QONNX file at `path` without metadata_props, written to `to`: an export
    from another machine or tool, whose metadata names no data set the checks could run on."""
    import onnx
    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.save(model, str(to))
    return to


@pytest.fixture(scope="session")
def finn_build_run(bias_corrected, tmp_path_factory):
    """finn_build.py on the bias-corrected export stripped of the demo's metadata, once for the
    session: (its result, out_dir). Its hardware check runs on seeded inputs on the input
    quantizer's grid; the suite's other builds (the AXE and act_eq exports) check on the run's
    images their metadata names. The FINN check tests reuse its first two steps' graphs
    (intermediate/1_frontend.onnx and 2_streamline.onnx), so FINN's frontend runs once here."""
    import_finn_steps()
    import finn_build
    out_dir = tmp_path_factory.mktemp("finn_build")
    model = without_metadata(bias_corrected.output,
                             tmp_path_factory.mktemp("from_elsewhere") / "quant_mobilenet_v2.onnx")
    args = finn_build.make_args([f"--model={model}", f"--out_dir={out_dir}", "--verify_images=4"])
    return finn_build.main(args), out_dir
