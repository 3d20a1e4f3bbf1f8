"""Layer-by-layer comparison of an exported graph with the model it came from, in integer levels.

End-to-end logits cannot tell a correct export from a broken one in a deep quantized network:
two correct implementations that sum a convolution in another order put a value that lies within
float rounding of a rounding point on different levels, and those one-level flips propagate and
multiply through the layers (docs/checks.md). So every quantizer is judged on its own: the graph
is executed node by node, and each activation quantizer's output is compared with the reference's,
then overwritten by it ("resynchronised"), so the next layer starts from the reference's input and
no difference can propagate. The rule, per quantizer (`judge`):

(a) its scale, zero point and bit width are the reference quantizer's;
(b) no element is more than one level off;
(c) every element that is one level off is a tie: the reference's value before rounding lies
    within delta of a rounding point, delta being a bound on how far two float32 implementations
    of the layer can disagree (`ErrorBound`: float32's unit roundoff times the layer's
    accumulation length, propagated from the last quantizers).

The graph runs once on a batch that holds every image twice: the first half runs free (its logits
give the end-to-end figures, reported but not judged), the second half is resynchronised.
"""
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as rt
from onnx import TensorProto, helper, numpy_helper
from qonnx.core.execute_custom_node import execute_custom_node
from qonnx.custom_op.general.intquant import int_quant
from qonnx.custom_op.general.quant import max_int, min_int
from qonnx.custom_op.registry import getCustomOp, is_custom_op
from qonnx.util.basic import qonnx_make_model

UNIT_ROUNDOFF = 2.0 ** -24  # float32: every rounded operation is exact to a relative 2**-24
QUANT_OPS = ("Quant", "IntQuant")
# The nodes that round onto an activation quantizer's levels in FINN's graphs: MultiThreshold in
# the converted and streamlined graphs, Thresholding in the hardware graph (FINN's layout, NHWC),
# and there a Quant on the input too (hw.steps.software_input_quantizer).
THRESHOLD_OPS = ("MultiThreshold", "Thresholding")


def gamma(terms):
    """Higham's bound on the relative error of a float32 sum of `terms` products, in any order:
    |computed - exact| <= gamma(n) * sum |product|."""
    return terms * UNIT_ROUNDOFF / (1 - terms * UNIT_ROUNDOFF)


# ------------------------------------------------------------------------------- running a graph
def run_node(node, context, graph, opset):
    """Execute one node in place on `context`, on whatever batch size the arrays have.

    Standard ops run in onnxruntime with their inputs declared without shapes (qonnx's own
    execute_node declares the graph's batch-1 shapes); custom ops (Quant, MultiThreshold) by qonnx.
    """
    if is_custom_op(node.domain, node.op_type):
        for name in node.output:  # FINN's hardware layers write into an existing buffer
            if name not in context:
                context[name] = _empty_like_declared(name, graph, context[node.input[0]].shape[0])
        execute_custom_node(node, context, graph, onnx_opset_version=opset)
        return
    names = [name for name in node.input if name]
    inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(context[name].dtype),
                                            None) for name in names]
    types = {info.name: info.type.tensor_type.elem_type
             for info in [*graph.value_info, *graph.output]}
    outputs = [helper.make_tensor_value_info(name, types.get(name, TensorProto.FLOAT), None)
               for name in node.output]
    model = qonnx_make_model(helper.make_graph([node], "node", inputs, outputs))
    model.opset_import[0].version = opset
    options = rt.SessionOptions()
    options.log_severity_level = 3
    session = rt.InferenceSession(model.SerializeToString(), options,
                                  providers=["CPUExecutionProvider"])
    for name, value in zip(node.output, session.run(None, {name: context[name] for name in names})):
        context[name] = value


def _empty_like_declared(name, graph, batch):
    """Zeros of the tensor's declared shape, with `batch` as its first dimension."""
    info = next((info for info in [*graph.value_info, *graph.output] if info.name == name), None)
    dims = [dim.dim_value for dim in info.type.tensor_type.shape.dim] if info is not None else []
    return np.zeros([batch, *dims[1:]] if dims else [], np.float32)


def opset_of(model):
    return next((item.version for item in model.model.opset_import if item.domain in ("", "ai.onnx")),
                17)


def initial_context(model):
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def last_uses(graph):
    """{tensor: index of the last node that reads it}: a tensor can be dropped after that node."""
    uses = {}
    for index, node in enumerate(graph.node):
        for name in node.input:
            uses[name] = index
    return uses


def batched_tensors(graph):
    """The tensors computed from the graph input (they carry the batch); the rest are weights."""
    batched = {graph.input[0].name}
    for node in graph.node:
        if any(name in batched for name in node.input):
            batched.update(node.output)
    return batched


def run_graph(model, images):
    """The graph's output on `images` (a torch tensor), all images in one batch."""
    graph, opset = model.graph, opset_of(model)
    context = {**initial_context(model),
               graph.input[0].name: images.detach().cpu().numpy().astype(np.float32)}
    for node in graph.node:
        run_node(node, context, graph, opset)
    return context[graph.output[0].name]


def on_input_grid(model, images):
    """`images` (a torch tensor) rounded by the graph's input Quant.

    The rounded images are fixed points of that Quant: it passes them through unchanged, and
    so does FINN's MultiThreshold that replaces it (which rounds a tie up, where the Quant rounds
    it to even). Images are returned as they are when the graph input feeds no Quant. For graphs
    that must agree exactly whichever way their input quantizer rounds ties.
    """
    quant = input_quant(model)
    if quant is None:
        return images
    scale, zero_point, bit_width = (model.get_initializer(name) for name in quant.input[1:4])
    op = getCustomOp(quant)
    values = images.detach().cpu().numpy().astype(np.float32)
    rounded = int_quant(values, scale, zero_point, bit_width, op.get_nodeattr("signed"),
                        op.get_nodeattr("narrow"), op.get_nodeattr("rounding_mode"))
    return images.new_tensor(rounded.astype(np.float32))


def input_quant(model):
    """The Quant node the graph input feeds, or None."""
    return next((node for node in model.find_consumers(model.graph.input[0].name)
                 if node.op_type == "Quant"), None)


def grid_inputs(model, count, seed=0):
    """`count` inputs of the graph's input shape whose values are levels of its input Quant,
    drawn uniformly and seeded (a torch tensor), or None when the graph input feeds no Quant.
    For checks of a file that names no data: every value is one the quantizer can give, so the
    graph computes on its own integers, as it would on images."""
    import torch
    quant = input_quant(model)
    if quant is None:
        return None
    scale, zero_point, bit_width = (model.get_initializer(name) for name in quant.input[1:4])
    op = getCustomOp(quant)
    signed, narrow = op.get_nodeattr("signed"), op.get_nodeattr("narrow")
    bits = int(np.asarray(bit_width).ravel()[0])
    shape = [count, *model.get_tensor_shape(model.graph.input[0].name)[1:]]
    levels = np.random.default_rng(seed).integers(
        min_int(signed, narrow, bits), max_int(signed, narrow, bits), endpoint=True, size=shape)
    values = torch.from_numpy(((levels - zero_point) * scale).astype(np.float32))
    return on_input_grid(model, values)  # exactly the Quant's own output values


# ------------------------------------------------------------------------------- the reference
@dataclass
class Firing:
    """One call of a Brevitas quantizer: its input and output values and its parameters."""
    name: str
    kind: str  # "activation", "weight" or "bias"
    before: np.ndarray  # the values it rounds (rounded_input)
    value: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    bit_width: float


def record_quantizers(brevitas_model, images):
    """(every enabled quantizer's Firing in call order, the logits) of one forward pass.

    The export traces the same forward, so the file's Quant nodes stand in the same order."""
    import torch
    from brevitas.proxy.parameter_quant import BiasQuantProxyFromInjector, WeightQuantProxyFromInjector
    from brevitas.proxy.runtime_quant import ActQuantProxyFromInjector
    kinds = {ActQuantProxyFromInjector: "activation", WeightQuantProxyFromInjector: "weight",
             BiasQuantProxyFromInjector: "bias"}
    firings, handles = [], []

    def as_array(tensor):
        return np.asarray(getattr(tensor, "value", tensor).detach().cpu().numpy(), np.float64)

    def hook(name, kind):
        def record(module, inputs, output):
            if module.is_quant_enabled:
                firings.append(Firing(name, kind, as_array(rounded_input(module, inputs[0])),
                                      as_array(output), as_array(output.scale),
                                      as_array(output.zero_point), float(output.bit_width)))
        return record
    for name, module in brevitas_model.named_modules():
        kind = next((kind for proxy, kind in kinds.items() if isinstance(module, proxy)), None)
        if kind:
            handles.append(module.register_forward_hook(hook(name, kind)))
    brevitas_model.eval()
    device = next(brevitas_model.parameters()).device
    try:
        with torch.no_grad():
            logits = brevitas_model(images.to(device))
    finally:
        for handle in handles:
            handle.remove()
    return firings, as_array(logits)


def rounded_input(proxy, value):
    """What a Brevitas quantizer proxy rounds when called on `value`: an activation proxy first
    applies its fused activation (a ReLU; after activation equalization with add_mul_node, the
    ReLU then the equalization's per-channel Mul, which the export writes as Relu, Mul, Quant), so
    the tie rule (c) must look at that activation's output, not at the proxy's input."""
    fused = getattr(proxy, "fused_activation_quant_proxy", None)
    if fused is None:
        return value
    return fused.activation_impl(getattr(value, "value", value))


# ------------------------------------------------------------------------------- the rule
@dataclass
class LayerCheck:
    """One quantizer's comparison: which node, against which reference, and what broke the rule.
    `problems` holds rule (a)'s findings (parameters, shapes); the counts hold rules (b) and (c)."""
    node: str
    reference: str
    elements: int = 0
    differing: int = 0  # elements one level off or more
    over_one: int = 0  # elements more than one level off: rule (b)
    not_ties: int = 0  # elements off where the reference is not near a rounding point: rule (c)
    near_ties: int = 0  # elements whose reference lies within delta of a rounding point
    max_diff: float = 0.0
    problems: list = field(default_factory=list)

    @property
    def ok(self):
        return not self.problems and not self.over_one and not self.not_ties

    def findings(self):
        return self.problems + (
            [f"{self.over_one} elements more than one level off"] if self.over_one else []) + (
            [f"{self.not_ties} elements off where the reference is not within float rounding "
             "of a rounding point"] if self.not_ties else [])

    def __str__(self):
        share = self.differing / self.elements if self.elements else 0.0
        return (f"{self.node} ({self.reference}): {'; '.join(self.findings()) or 'ok'} "
                f"[{self.differing} of {self.elements} elements ({share:.2%}) differ, up to "
                f"{self.max_diff:g} levels]")


def judge(check, levels, reference_levels, before, delta):
    """Rules (b) and (c) on integer levels: at most one level off, and only on ties.

    before: the reference's value before rounding, in levels; delta: per element, how far two
    float32 implementations of the layer can disagree, in levels."""
    diff = np.abs(levels - reference_levels)
    off = diff > 0.5
    near = np.abs(before - np.floor(before) - 0.5) <= delta
    check.elements, check.differing = int(diff.size), int(off.sum())
    check.over_one = int((diff > 1.5).sum())
    check.near_ties, check.not_ties = int(near.sum()), int((off & ~near).sum())
    check.max_diff = float(diff.max()) if diff.size else 0.0
    return check


def same_parameters(check, node_parameters, firing):
    """Rule (a): the node's scale, zero point and bit width are the reference quantizer's (to a
    float32 rounding: both hold the same float32 numbers)."""
    for what, ours, theirs in zip(("scale", "zero point", "bit width"), node_parameters,
                                  (firing.scale, firing.zero_point, firing.bit_width)):
        try:
            ours, theirs = np.broadcast_arrays(np.asarray(ours, np.float64), np.asarray(theirs, np.float64))
        except ValueError:
            check.problems.append(f"{what} of shape {np.shape(ours)}, the reference's {np.shape(theirs)}")
            continue
        wrong = np.flatnonzero(~np.isclose(ours, theirs, rtol=1e-6, atol=0))
        if len(wrong):
            check.problems.append(f"{what} {ours.ravel()[wrong[0]]:.6g} != the reference's "
                                  f"{theirs.ravel()[wrong[0]]:.6g} (at {len(wrong)} of {ours.size} "
                                  f"entries, the first at index {wrong[0]})")


# ------------------------------------------------------------------------------- error bounds
class ErrorBound:
    """Per element, a bound on |this graph's value - the reference's| for every tensor of the
    resynchronised half, from float32 rounding alone, when both start from the same quantized
    values. Zero right after a quantizer (resynchronised) and for weights; each op adds its own
    rounding: Higham's gamma(n) times the sum of |terms| for an n-term dot product or mean, a few
    unit roundoffs of the magnitudes for BatchNorm and elementwise arithmetic, all doubled because
    both implementations round. An op without a rule here has no bound: the check says so."""

    ELEMENTWISE_PASS = ("Relu", "Clip", "Identity")
    MOVEMENT = ("Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "MaxPool", "Concat",
                "GlobalMaxPool")

    def __init__(self, graph, opset, half):
        self.graph, self.opset, self.half = graph, opset, half
        self.bounds = {}

    def get(self, name):
        return self.bounds.get(name, 0.0)

    def _run(self, node, values):
        """The node's output on `values` (name -> array) in place of its inputs."""
        context = dict(values)
        run_node(node, context, self.graph, self.opset)
        return context[node.output[0]]

    def update(self, node, context, batched):
        """Set the bound of `node`'s output from its inputs (resynchronised half of `context`)."""
        def value(name):
            return context[name][self.half:] if name in batched else context[name]
        inputs = [name for name in node.input if name]
        out = np.abs(value(node.output[0])).astype(np.float64)
        op = node.op_type
        u2 = 2 * UNIT_ROUNDOFF
        if op in ("Conv", "Gemm", "MatMul"):
            magnitudes = self._run(node, {name: np.abs(value(name)) for name in inputs})
            terms = (context[inputs[1]][0].size if op == "Conv" else value(inputs[0]).shape[-1])
            bound = 2 * gamma(terms + 1) * magnitudes.astype(np.float64)
            if not np.isscalar(self.get(inputs[0])):
                zero_bias = {name: np.zeros_like(value(name)) for name in inputs[2:]}
                bound = bound + self._run(node, {inputs[0]: self.get(inputs[0]).astype(np.float32),
                                                 inputs[1]: np.abs(value(inputs[1])), **zero_bias})
        elif op == "BatchNormalization":
            x, scale, bias, mean, var = (value(name).astype(np.float64) for name in inputs[:5])
            epsilon = next((attr.f for attr in node.attribute if attr.name == "epsilon"), 1e-5)
            shape = (1, -1) + (1,) * (x.ndim - 2)
            gain = (scale / np.sqrt(var + epsilon)).reshape(shape)
            bound = (np.abs(gain) * self.get(inputs[0])
                     + 4 * u2 * (np.abs(gain) * (np.abs(x) + np.abs(mean.reshape(shape)))
                                 + np.abs(bias.reshape(shape))))
        elif op in ("Add", "Sub"):
            bound = self.get(inputs[0]) + self.get(inputs[1]) + u2 * out
        elif op == "Mul":
            a, b = (np.abs(value(name)) for name in inputs)
            bound = self.get(inputs[0]) * b + a * self.get(inputs[1]) + u2 * out
        elif op == "Div":
            bound = self.get(inputs[0]) / np.abs(value(inputs[1])) + u2 * out
        elif op in self.ELEMENTWISE_PASS:
            bound = self.get(inputs[0])
        elif op in self.MOVEMENT:
            if all(np.isscalar(self.get(name)) for name in inputs):
                bound = 0.0
            else:
                bound = self._run(node, {name: (np.broadcast_to(self.get(name), value(name).shape)
                                                .astype(np.float32) if name in batched else value(name))
                                         for name in inputs})
        elif op in ("GlobalAveragePool", "AveragePool"):
            x = value(inputs[0])
            window = (int(np.prod(x.shape[2:])) if op == "GlobalAveragePool" else
                      int(np.prod(next(attr.ints for attr in node.attribute
                                       if attr.name == "kernel_shape"))))
            mean_error = (self._run(node, {inputs[0]: np.broadcast_to(self.get(inputs[0]), x.shape)
                                           .astype(np.float32)}) if not np.isscalar(self.get(inputs[0]))
                          else 0.0)
            bound = mean_error + 2 * gamma(window + 1) * self._run(node, {inputs[0]: np.abs(x)})
        else:
            raise NotImplementedError(f"no float error bound for {op} ({node.name})")
        self.bounds[node.output[0]] = bound

    def reset(self, name):
        self.bounds.pop(name, None)


# ------------------------------------------------------------------------------- QONNX vs Brevitas
def quant_parameters(node, context):
    return tuple(context[name] for name in node.input[1:4])


def quant_levels(values, scale, zero_point):
    return np.round(np.asarray(values, np.float64) / scale + zero_point)


@dataclass
class Comparison:
    """The layer checks in graph order, the free-running logits, and per activation quantizer the
    reference's integer levels and where a one-level difference counts as a tie (for FINN)."""
    layers: list
    logits: np.ndarray
    reference_logits: np.ndarray
    levels: list = field(default_factory=list)  # (reference levels, tie mask, Quant node)
    problem: str = ""

    @property
    def failures(self):
        return [layer for layer in self.layers if not layer.ok]

    @property
    def ok(self):
        return not self.problem and not self.failures


def pair_quantizers(quants, firings):
    """The file's Quant nodes with the reference's quantizer calls, one for one in order, or a
    message saying why they do not pair (the file is not this model's export)."""
    if len(quants) != len(firings):
        return None, (f"the file has {len(quants)} Quant nodes, the model {len(firings)} "
                      "enabled quantizers: it is not this model's export")
    return list(zip(quants, firings)), ""


def compare_with_brevitas(model, brevitas_model, images):
    """Run the QONNX graph (ModelWrapper, not cleaned: its node order is the export's trace order)
    layer by layer against the Brevitas model on `images`; a Comparison."""
    firings, reference_logits = record_quantizers(brevitas_model, images)
    quants = [node for node in model.graph.node if node.op_type in QUANT_OPS]
    pairs, problem = pair_quantizers(quants, firings)
    if pairs is None:
        return Comparison([], None, reference_logits, problem=problem)
    return run_layer_by_layer(model, images, {node.name: firing for node, firing in pairs},
                              reference_logits)


def qonnx_reference(model, images):
    """The QONNX graph as its own reference: per activation Quant (graph order) its integer levels
    on `images` and where a one-level difference from them counts as a tie; what FINN's graphs
    are judged against (compare_thresholds)."""
    return run_layer_by_layer(model, images, None, None)


def run_layer_by_layer(model, images, reference, reference_logits):
    """Execute `model` on `images` twice over (free, resynchronised), judging each Quant against
    `reference` ({node name: Firing}; None: each Quant is its own reference, which collects the
    levels and ties only)."""
    graph, opset = model.graph, opset_of(model)
    count = len(images)
    batched = batched_tensors(graph)
    x = images.detach().cpu().numpy().astype(np.float32)
    context = {**initial_context(model), graph.input[0].name: np.concatenate([x, x])}
    bounds, uses = ErrorBound(graph, opset, count), last_uses(graph)
    layers, levels = [], []
    keep = {graph.output[0].name}
    for index, node in enumerate(graph.node):
        run_node(node, context, graph, opset)
        if node.op_type in QUANT_OPS and (reference is None or node.name in reference):
            firing = reference[node.name] if reference else own_firing(node, context, batched, count)
            check = compare_quant(node, firing, context, bounds, batched, count)
            layers.append(check)
            if node.output[0] in batched:  # an activation: the next layer starts from the reference
                if check.reference_levels is not None:
                    levels.append((check.reference_levels, check.ties, node))
                context[node.output[0]][count:] = firing.value.astype(np.float32)
                bounds.reset(node.output[0])
            del check.reference_levels, check.ties
        elif any(name in batched for name in node.input):
            try:
                bounds.update(node, context, batched)
            except NotImplementedError as error:
                return Comparison(layers, None, reference_logits, problem=str(error))
        for name in node.input:
            if uses.get(name) == index and name not in keep and name in batched:
                context.pop(name, None)
                bounds.reset(name)
    logits = context[graph.output[0].name][:count].reshape(count, -1).astype(np.float64)
    if reference_logits is None:
        reference_logits = logits
    return Comparison(layers, logits, reference_logits.reshape(count, -1), levels)


def own_firing(node, context, batched, count):
    """A Quant node's own input and output on the resynchronised half, as a reference Firing."""
    def half(name):
        value = context[name]
        return (value[count:] if name in batched else value).astype(np.float64)
    scale, zero_point, bit_width = (np.asarray(value, np.float64)
                                    for value in quant_parameters(node, context))
    return Firing(node.name, "activation" if node.output[0] in batched else "weight",
                  half(node.input[0]), half(node.output[0]), scale, zero_point, float(bit_width))


def compare_quant(node, firing, context, bounds, batched, count):
    """One Quant node against the reference quantizer call it stands for (rules a, b, c)."""
    check = LayerCheck(node.name, f"{firing.name}, {firing.kind}")
    scale, zero_point, bit_width = quant_parameters(node, context)
    same_parameters(check, (scale, zero_point, bit_width), firing)
    output = context[node.output[0]]
    is_batched = node.output[0] in batched
    ours = output[count:] if is_batched else output
    if ours.shape != firing.value.shape:
        check.problems.append(f"shape {ours.shape} != the reference's {firing.value.shape}")
        check.reference_levels = check.ties = None
        return check
    reference_scale, reference_zero = firing.scale, firing.zero_point
    levels = quant_levels(ours, reference_scale, reference_zero)
    reference_levels = quant_levels(firing.value, reference_scale, reference_zero)
    before = firing.before / reference_scale + reference_zero
    error = bounds.get(node.input[0]) if is_batched else 0.0
    delta = np.asarray(error) / np.abs(reference_scale) + 4 * UNIT_ROUNDOFF * (
        np.abs(before) + np.abs(reference_zero))
    judge(check, levels, reference_levels, before, delta)
    check.reference_levels = reference_levels
    check.ties = np.abs(before - np.floor(before) - 0.5) <= delta
    return check


# ------------------------------------------------------------------------------- FINN vs QONNX
def threshold_count_range(quant_node, context):
    """The lowest integer level of a Quant: a MultiThreshold counts levels from it."""
    op = getCustomOp(quant_node)
    bit_width = float(np.asarray(context[quant_node.input[3]]).ravel()[0])
    if not op.get_nodeattr("signed"):
        return 0.0
    return -(2 ** (bit_width - 1)) + (1 if op.get_nodeattr("narrow") else 0)


def compare_thresholds(finn_model, images, comparison, qonnx_model, batch=None):
    """FINN's graph (converted, streamlined or hardware; ModelWrapper) layer by layer against the
    QONNX graph's resynchronised levels (`comparison`, from qonnx_reference of `qonnx_model`): each
    threshold node (THRESHOLD_OPS), in graph order, stands for the QONNX graph's activation Quant
    of the same rank. Its output (levels counted from the Quant's lowest, times out_scale plus
    out_bias) is judged by rules (b) and (c), then overwritten with the reference's; in the
    tensor's own layout (FINN's data layout annotation: NHWC in the hardware graph). `batch`:
    images per run (the hardware layers take one).
    Returns (layer checks, problem)."""
    batched = batched_tensors(finn_model.graph)
    thresholds = [index for index, node in enumerate(finn_model.graph.node)
                  if node.op_type in THRESHOLD_OPS
                  or (node.op_type in QUANT_OPS and node.output[0] in batched)]
    if len(thresholds) != len(comparison.levels):
        return [], (f"{len(thresholds)} threshold nodes for {len(comparison.levels)} activation "
                    "Quants of the QONNX graph: they do not pair")
    reference = dict(zip(thresholds, comparison.levels))  # by position: names may be empty
    quant_context = initial_context(qonnx_model)
    batch = batch or len(images)
    runs = [_thresholds_run(finn_model, images[start:start + batch], reference, quant_context,
                            slice(start, start + batch))
            for start in range(0, len(images), batch)]
    return [merge(checks) for checks in zip(*runs)], ""


def _thresholds_run(finn_model, images, reference, quant_context, rows):
    """compare_thresholds on one batch of images (`rows` of the reference's levels)."""
    graph, opset = finn_model.graph, opset_of(finn_model)
    context = initial_context(finn_model)
    context[graph.input[0].name] = images.detach().cpu().numpy().astype(np.float32)
    uses, keep, layers = last_uses(graph), {graph.output[0].name}, []
    for index, node in enumerate(graph.node):
        run_node(node, context, graph, opset)
        if index in reference:
            levels, ties, quant = reference[index]
            nhwc = finn_model.get_tensor_layout(node.output[0]) == ["N", "H", "W", "C"]
            layers.append(_judge_threshold(node, index, context, levels[rows], ties[rows], quant,
                                           quant_context, nhwc))
        for name in node.input:
            if uses.get(name) == index and name not in keep:
                context.pop(name, None)
    return layers


def _judge_threshold(node, index, context, levels, ties, quant, quant_context, nhwc):
    """One threshold node's output against the Quant's levels; overwritten by them after. A
    threshold node counts levels from the Quant's lowest (times out_scale, plus out_bias); a
    Quant node (FINN's software input quantizer) gives them on its own scale."""
    if node.op_type in QUANT_OPS:
        scale, zero_point, _ = (np.asarray(value, np.float64)
                                for value in quant_parameters(node, context))
        out_scale, out_bias = float(scale), -float(zero_point) * float(scale)
        expected = levels * out_scale + out_bias
    else:
        op = getCustomOp(node)
        out_scale = _attribute(op, "out_scale", 1.0)
        out_bias = _attribute(op, "out_bias", None)  # MultiThreshold's; Thresholding's is ActVal
        out_bias = _attribute(op, "ActVal", 0.0) if out_bias is None else out_bias
        expected = (levels - threshold_count_range(quant, quant_context)) * out_scale + out_bias
    ours = context[node.output[0]].astype(np.float64)
    if nhwc and expected.ndim == 4:
        expected, ties = expected.transpose(0, 2, 3, 1), ties.transpose(0, 2, 3, 1)
    check = LayerCheck(node.name or f"{node.op_type} #{index}", f"QONNX {quant.name}")
    if ours.size != expected.size:
        check.problems.append(f"shape {ours.shape} != the QONNX levels' {expected.shape}")
        return check
    expected = expected.reshape(ours.shape)
    judge(check, ours / out_scale, expected / out_scale, _tie_before(ties.reshape(ours.shape)), 0.0)
    context[node.output[0]] = expected.astype(np.float32)
    return check


def _attribute(op, name, default):
    """A node attribute, or `default` where the op has no such attribute."""
    return op.get_nodeattr(name) if name in op.get_nodeattr_types() else default


def merge(checks):
    """One LayerCheck from the same layer's checks on several batches of images."""
    first = checks[0]
    merged = LayerCheck(first.node, first.reference)
    for check in checks:
        merged.elements += check.elements
        merged.differing += check.differing
        merged.over_one += check.over_one
        merged.not_ties += check.not_ties
        merged.near_ties += check.near_ties
        merged.max_diff = max(merged.max_diff, check.max_diff)
        merged.problems += [problem for problem in check.problems if problem not in merged.problems]
    return merged


def _tie_before(ties):
    """A stand-in 'value before rounding' that sits on a rounding point exactly where the QONNX
    comparison found a tie, and half a level from one elsewhere: rule (c) with delta 0 then
    forgives a one-level difference on exactly those elements."""
    return np.where(ties, 0.5, 0.0)


# ------------------------------------------------------------------------------- figures
def end_to_end(logits, reference):
    """Top-1 agreement (images) and logit SQNR in dB between two implementations: reported, not
    judged (one-level flips inside the network move the logits of a correct export too)."""
    agree = int(np.sum(logits.argmax(axis=1) == reference.argmax(axis=1)))
    noise = float(np.sum((logits - reference) ** 2))
    signal = float(np.sum(reference ** 2))
    sqnr = float("inf") if noise == 0 else 10 * np.log10(signal / noise)
    return agree, sqnr


def summarize_layers(layers, what):
    """One line over layer checks: how many quantizers, how many broke the rule, the flips."""
    failures = [layer for layer in layers if not layer.ok]
    differing = sum(layer.differing for layer in layers)
    elements = sum(layer.elements for layer in layers)
    text = (f"{what}, layer by layer: {len(layers)} quantizers, {len(failures)} break the rule; "
            f"{differing} of {elements} elements one level off, all ties" if not failures else
            f"{what}, layer by layer: {len(failures)} of {len(layers)} quantizers break the rule, "
            f"the first {failures[0]}")
    return text, failures
