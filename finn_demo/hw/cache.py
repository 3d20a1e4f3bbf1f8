"""The cache of the build's steps 1-4 in out_dir/intermediate/, behind finn_build.py --reuse.

Each step's model is saved with what made it, and loaded again only when the same source file
and flags would make it. Needs no FINN."""
import hashlib
import json
import os
import time
import warnings
from collections import Counter
from pathlib import Path

from qonnx.core.modelwrapper import ModelWrapper

from finn_demo.common.files import atomic_path

SOURCE_KEY = "finn_build_source"  # metadata of each intermediate model: what it was made from


class StepCache:
    """Runs each step on a model, prints one line with its seconds, saves the result.

    With reuse on, a step whose model is already in out_dir/intermediate/ is loaded instead, if
    it was made from the same source file (sha256) with the same step flags, which each saved
    model records in its metadata; from the first step that is run again, every later step runs.
    Not FINN's start_step: it resumes from intermediate_models/ without knowing what source
    model or flags made them; this key does, at the cost of a second copy of steps 1-4.
    """

    def __init__(self, out_dir, reuse, source):
        self.folder = os.path.join(out_dir, "intermediate")
        os.makedirs(self.folder, exist_ok=True)
        self.reuse, self.seconds = reuse, {}
        self.source_sha256 = hashlib.sha256(Path(source).read_bytes()).hexdigest()

    def __call__(self, name, function, model, *args):
        path = os.path.join(self.folder, f"{len(self.seconds) + 1}_{name}.onnx")
        key = json.dumps({"source_sha256": self.source_sha256, "step": name, "flags": [
            arg for arg in args if isinstance(arg, (str, int, float))]})
        start = time.perf_counter()
        if self.reuse and os.path.exists(path):
            saved = ModelWrapper(path)
            if saved.get_metadata_prop(SOURCE_KEY) == key:
                return self.record(name, start, saved, "loaded")
            print(f"    {path} was made from another --model or other flags: running {name} again")
        self.reuse = False  # the steps after a step that runs again depend on its new result
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FINN warns once per node it leaves alone
            model = function(model, *args)
        model.set_metadata_prop(SOURCE_KEY, key)
        with atomic_path(path) as tmp:  # an interrupted save leaves no half file to reuse
            model.save(str(tmp))
        return self.record(name, start, model)

    def record(self, name, start, model, how="done"):
        """Keep and print the seconds since `start` of the step `name` that gave `model`."""
        self.seconds[name] = time.perf_counter() - start
        types = Counter(node.op_type for node in model.graph.node)
        print(f"[{len(self.seconds)}] {name:15} {how} in {self.seconds[name]:6.1f} s: "
              + ", ".join(f"{count} {op}" for op, count in types.most_common()), flush=True)
        return model
