"""GPTQ, GPFQ and Qronos with the same quantized weights as Brevitas' implementations, many times faster.

    model(images[0])  # the weight quantizers must be initialized, as for Brevitas' gpxq modes
    run_gptq_mode(images, model)                                                      # GPTQ
    run_gpfq_mode(images, model, FastGPFQ)                                            # GPFQ
    run_gpfq_mode(images, model, partial(FastQronos, alpha=1e-3), act_order=True)     # Qronos

Brevitas' `gptq_mode` and `gpfq_mode` re-run the model from its input for every layer and every
batch (`gpfq_mode` twice: quantized, then in float after switching quantization off and on
again module by module, walks of the whole model, millions of calls). Their GPTQ, GPFQ and
Qronos then round one input column at a time, group by group (a depthwise conv is groups x 9
tiny steps), GPFQ re-quantizing the whole weight at every column. Here, inside Brevitas' own
`gptq_mode` / `gpfq_mode` and with its own input statistics (`update_batch`):

- the graph runs node by node, once, over all calibration batches, each node quantized (and,
  for GPFQ and Qronos, also in float with quantization switched off for its own module only);
  each layer is optimized when the pass reaches it, on the same inputs as in Brevitas' passes;
- `FastGPTQ`, `FastGPFQ` and `FastQronos` update all groups of a column at once and keep the
  quantized columns instead of re-quantizing the history: the weight scales are fixed after the
  first forward pass, so each column is rounded once, by the layer's own Brevitas quantizer.

Where summation order decides the last bit of a value (and so, at a rounding tie, an integer
weight), the products are taken exactly as Brevitas takes them: same operations, same memory
layout, group by group where a batched product would sum in another order. The price is memory:
the pass holds the live activations of every calibration image at once (tens of MB for the digits
model; about 10 GB per 1000 images for MobileNetV2 at 224x224 with the float pass, half without),
where Brevitas holds one batch.
"""
import math
import warnings
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from brevitas.backport.fx import Interpreter
from brevitas.core.quant import IntQuant
from brevitas.core.scaling import ConstScaling, ParameterFromStatsFromParameterScaling, ParameterScaling
from brevitas.graph.calibrate import quantization_status_manager
from brevitas.graph.gpfq import GPFQ, gpfq_mode
from brevitas.graph.gptq import GPTQ, gptq_mode
from brevitas.graph.gpxq import SUPPORTED_CONV_OP
from brevitas.graph.qronos import Qronos
from brevitas.graph.utils import is_conv_transposed, power_iteration
from brevitas.quant_tensor import QuantTensor
from brevitas.utils.torch_utils import StopFwdException
from torch import nn
from tqdm import tqdm

try:
    from torch.linalg import LinAlgError
except ImportError:  # as brevitas.graph.qronos
    LinAlgError = RuntimeError

# Weight scales that stay fixed once initialized: rounding a column alone then equals rounding it
# inside the whole weight. Scales re-computed from the weight on every call fall back to Brevitas.
_FIXED_SCALINGS = (ParameterFromStatsFromParameterScaling, ParameterScaling, ConstScaling)


# ------------------------------------------------------------------------- rounding by column
def column_quantizer(layer):
    """A function rounding weight columns [groups, out/groups] as `layer.quant_weight()` would,
    or None where that is not possible column by column (Brevitas' own update then runs).

    It runs the steps of the layer's own integer quantizer (`IntQuant.forward`: its rounding and
    clamping modules) with the layer's scale, zero point and integer range, which are fixed once
    the quantizer is initialized, and computed here once instead of at every column.
    """
    proxy = layer.weight_quant
    tensor_quant = getattr(proxy, "tensor_quant", None)
    int_quant = getattr(tensor_quant, "int_quant", None)
    scaling = getattr(tensor_quant, "scaling_impl", None)
    if (not isinstance(int_quant, IntQuant) or not isinstance(scaling, _FIXED_SCALINGS)
            or proxy.is_groupwise or proxy.requires_quant_input or proxy.export_mode
            or is_conv_transposed(layer)):
        return None
    _check_initialized(proxy)
    quant = layer.quant_weight()
    groups = getattr(layer, "groups", 1)
    scale, zero_point = (_per_row(value, groups) for value in (quant.scale, quant.zero_point))
    min_int, max_int = int_quant.min_int(quant.bit_width), int_quant.max_int(quant.bit_width)

    def quantize(columns):
        integers = int_quant.float_to_int_impl(int_quant.input_view_impl(columns) / scale + zero_point)
        integers = int_quant.tensor_clamp_impl(integers, min_val=min_int, max_val=max_int)
        return (integers - zero_point) * scale
    return quantize


def _per_row(value, groups):
    """A per-tensor or per-output-channel quantizer parameter shaped [groups, out/groups]."""
    return value if value.numel() == 1 else value.reshape(groups, -1)


def _check_initialized(proxy):
    # Brevitas' own message (brevitas.graph.gpxq.GPxQ.get_quant_weights)
    if any(hasattr(m, "init_done") and not m.init_done for m in proxy.modules()):
        raise RuntimeError("Weight quantizer not initialized. Run a forward pass after "
                           "quantization and try again.")


# ----------------------------------------------------------------------- shared layer set-up
def _grouped(layer, weight):
    """`weight` as the [groups, out/groups, in] view that Brevitas' GPxQ works on."""
    if isinstance(layer, SUPPORTED_CONV_OP):
        weight = weight.flatten(1)
    groups = getattr(layer, "groups", 1)
    return weight.view(groups, -1, weight.shape[-1])


def _order_columns(optimizer, weight):
    """Zero the columns whose input is always zero and, with act_order, sort the covariances by
    their diagonal, in place as Brevitas does; return the column order, [groups, in]."""
    dead = optimizer.H.diagonal(dim1=1, dim2=2) == 0
    weight.masked_fill_(dead.unsqueeze(1).to(weight.device), 0)
    if not optimizer.act_order:
        return torch.arange(weight.shape[-1], device=weight.device).expand(weight.shape[0], -1)
    # One argsort per group, as Brevitas: ties (dead columns) keep Brevitas' order.
    perm = torch.stack([torch.argsort(torch.diag(h), descending=True) for h in optimizer.H])
    optimizer.G = _permute_square(optimizer.G, perm)
    optimizer.H = _permute_square(optimizer.H, perm)
    return perm.to(weight.device)


def _permute_square(matrices, perm):
    """matrices[g][perm[g]][:, perm[g]] for every group g."""
    rows = torch.arange(len(perm), device=perm.device)[:, None, None]
    return matrices[rows, perm[:, :, None], perm[:, None, :]]


def _gather(weight, perm):
    """The columns of `weight` [groups, rows, in] in each group's order `perm` (a copy)."""
    return weight.gather(2, perm[:, None, :].expand_as(weight)).contiguous()


def _scatter(weight, perm, columns):
    """Write `columns` (in each group's order) back into `weight` in place."""
    weight.scatter_(2, perm[:, None, :].expand_as(columns), columns.to(weight.dtype))


def _matvec_per_group(matrices, vectors):
    """matrices[g] @ vectors[g] for each group, exactly as Brevitas computes it: group by group.

    A batched product may sum the terms in another order (measured: it does), and a last-bit
    difference can flip a weight that sits on a rounding tie.
    """
    if len(matrices) == 1:
        return matrices[0].matmul(vectors[0]).unsqueeze(0)
    return torch.stack([matrix.matmul(vector) for matrix, vector in zip(matrices, vectors)])


def _matmul_per_group(matrices, others):
    """matrices[g] @ others[g] for each group, exactly as Brevitas' group-by-group products."""
    if len(matrices) == 1:
        return matrices[0].matmul(others[0]).unsqueeze(0)
    if matrices.shape[-1] == 1:  # outer products: one product per entry, no sum to reorder
        return matrices * others
    return torch.stack([matrix.matmul(other) for matrix, other in zip(matrices, others)])


def _history(layer, quantized, t):
    """The first `t` rounded columns in the memory layout Brevitas multiplies them in (it sets
    which BLAS kernel sums them): a copy for a Linear layer, a view of the whole weight for a conv.
    """
    return quantized[:, :, :t].contiguous() if isinstance(layer, nn.Linear) else quantized[:, :, :t]


def _check_rounding(layer, weight, quantized, perm):
    """The layer's own quantizer must give the columns rounded here; a changing scale would not."""
    expected = _grouped(layer, layer.quant_weight().value.detach())
    if not torch.equal(_gather(expected, perm), quantized):
        raise RuntimeError(f"{layer.__class__.__name__}: the weight scale changed during the "
                           "update; use impl='brevitas'")


class _FastGPxQ:
    """What FastGPFQ and FastQronos add to Brevitas' classes, before their own updates."""

    def column_quantizer(self):
        """`column_quantizer(self.layer)`, or None where Brevitas' own update must run: also
        for weights stored in another dtype than the update computes in (Brevitas rounds them
        to that dtype after every column)."""
        if self.layer.weight.dtype != self.dtype:
            return None
        return column_quantizer(self.layer)

    def process_input(self, inp):
        """Brevitas' `process_input`, with a 2-d conv's input unfolded by `F.unfold` for all
        groups at once. Brevitas unfolds group by group (a depthwise conv has hundreds) with a
        convolution by a one-hot kernel, the costliest step of its input statistics. Both copy
        the same values into the same [groups, in/groups * kernel size, images * pixels] layout.
        """
        layer = self.layer
        if (not isinstance(layer, nn.Conv2d) or is_conv_transposed(layer)
                or isinstance(layer.padding, str)):
            return super().process_input(inp)
        inp = layer.input_quant(inp[0])  # Brevitas' first steps for a quantized conv
        if isinstance(inp, QuantTensor):
            if layer.weight_quant.is_quant_enabled and self.quant_metadata is None:
                self.quant_metadata = layer.input_quant.cache_class(inp, metadata_only=True)
            inp = inp.value
        if layer.kernel_size == layer.stride == (1, 1) and layer.padding == (0, 0):
            columns = inp.transpose(1, 0).flatten(1)  # a 1x1 conv's unfolding is a reshape
        else:
            columns = F.unfold(inp, layer.kernel_size, layer.dilation, layer.padding, layer.stride)
            columns = columns.transpose(1, 0).flatten(1)
        return columns.view(self.groups, -1, columns.shape[-1])


# ------------------------------------------------------------------------------------- GPFQ
class FastGPFQ(_FastGPxQ, GPFQ):
    """Brevitas' GPFQ (`brevitas.graph.gpfq.GPFQ`) with the column loop vectorized over groups."""

    def single_layer_update(self):
        quantize = self.column_quantizer()
        if quantize is None:
            return super().single_layer_update()
        assert hasattr(self.layer, "weight_orig"), "GPFQ requires the original weights"
        if self.use_intermediate_buffer:
            del self.B
        weight = _grouped(self.layer, self.layer.weight.data)
        perm = _order_columns(self, weight)
        # elementwise steps below: the same values on the weights' device as on the buffers'
        self.G, self.H = self.G.to(weight.device), self.H.to(weight.device)
        d_g, d_h = self.G.diagonal(dim1=1, dim2=2), self.H.diagonal(dim1=1, dim2=2)
        d_s = torch.where(d_g * d_h != 0, d_g / d_h, torch.zeros_like(d_g))
        # diag(1 / D_h) @ tril(.) of Brevitas, as a row scaling: one product per entry either way
        inv_d_h = torch.where(d_h != 0, 1. / d_h, torch.zeros_like(d_h)).unsqueeze(-1)
        l_g, l_h = inv_d_h * torch.tril(self.G, -1), inv_d_h * torch.tril(self.H, -1)
        del self.H, self.G
        original = _gather(_grouped(self.layer, self.layer.weight_orig.to(weight.device)), perm)
        current = _gather(weight, perm).to(self.dtype)
        quantized = torch.empty_like(current)
        for t in range(current.shape[-1]):
            l_w = _matvec_per_group(original[:, :, :t].contiguous(), l_g[:, t, :t])
            l_q = _matvec_per_group(_history(self.layer, quantized, t), l_h[:, t, :t])
            current[:, :, t] = d_s[:, t, None] * current[:, :, t] + l_w - l_q
            quantized[:, :, t] = quantize(current[:, :, t])
        _scatter(weight, perm, current)
        _check_rounding(self.layer, weight, quantized, perm)


# ----------------------------------------------------------------------------------- Qronos
class FastQronos(_FastGPxQ, Qronos):
    """Brevitas' Qronos (`brevitas.graph.qronos.Qronos`) with its column loop vectorized over
    groups; set-up steps that cost a few operations per group still go group by group."""

    def single_layer_update(self, beta=1e4):
        quantize = self.column_quantizer()
        if quantize is None:
            return super().single_layer_update(beta)
        assert hasattr(self.layer, "weight_orig"), "Qronos requires the original weights"
        if self.use_intermediate_buffer:
            del self.B
        weight = _grouped(self.layer, self.layer.weight.data)
        perm = _order_columns(self, weight)
        assert not torch.isnan(self.H).any() and not torch.isnan(self.G).any(), self.name
        original = _gather(_grouped(self.layer, self.layer.weight_orig.to(weight.device)), perm)
        current = _gather(weight, perm).to(self.dtype)
        try:
            inverse, damp = self._damped_inverse()
        except LinAlgError:
            warnings.warn(f"Failed to compute the inverse of H for layer {self.name}: forward "
                          "error correction will be a null operation")
            return
        # on the buffers' device so far, as Brevitas; from here on, on the weights'
        self.G, self.H = self.G.to(weight.device), self.H.to(weight.device)
        inverse, damp = inverse.to(weight.device), damp.to(weight.device)
        inverse = self._first_column(original, current, inverse, damp, quantize)
        _scatter(weight, perm, current)  # Brevitas keeps these if the next step fails
        try:
            # Brevitas writes the factors into a row-major buffer: its later products see that layout
            upper = (torch.linalg.cholesky(inverse * beta, upper=True) / math.sqrt(beta)).contiguous()
        except LinAlgError:
            warnings.warn(f"Failed to compute Cholesky decomposition for layer {self.name}: "
                          "forward error correction will be a null operation")
            return
        quantized = torch.empty_like(current)
        quantized[:, :, 0] = quantize(current[:, :, 0])
        diffuse_errors(current, quantized, upper, quantize, self.blocksize, first=1)
        _scatter(weight, perm, current)
        _check_rounding(self.layer, weight, quantized, perm)

    def _damped_inverse(self):
        """(H + alpha * largest eigenvalue)^-1 per group, and each group's damping."""
        diag = torch.arange(self.columns, device=self.H.device)
        damp = torch.stack([self.alpha * power_iteration(h, 30) for h in self.H])
        inverse = self.H.clone()
        inverse[:, diag, diag] += damp[:, None]
        factor = torch.linalg.cholesky(inverse).contiguous()  # batched: the same as one by one
        # cholesky_inverse batched sums in another order: one group at a time, as Brevitas
        return torch.stack([torch.cholesky_inverse(f) for f in factor]), damp

    def _first_column(self, original, current, inverse, damp, quantize):
        """Qronos' step 1 (the first column against the float layer) and the correction of the
        other columns for its rounding; returns the inverse without its first row and column."""
        d_h = self.H.diagonal(dim1=1, dim2=2)
        inv_d_h = torch.where(d_h != 0, 1. / d_h, torch.zeros_like(d_h))
        g_col = self.G[:, :, 0] * inv_d_h[:, :1]
        u_row = torch.triu(self.H, 1)[:, 0, :] * inv_d_h[:, :1]
        current[:, :, 0] = _matvec_per_group(original, g_col) - _matvec_per_group(current, u_row)
        # Sherman-Morrison downdate (outer products: one product per entry, exact batched)
        first, corner = inverse[:, 1:, [0]], inverse[:, 0, 0].clone()
        inverse = inverse[:, 1:, 1:]
        inverse -= (first * first.transpose(1, 2)) / corner[:, None, None]
        q_first = quantize(current[:, :, 0]).unsqueeze(-1)
        for g in range(len(current)):  # a few products per group, in Brevitas' order
            damped = self.G[g] + torch.diag(torch.full((self.columns,), damp[g], device=damp.device))
            g_w = original[g].matmul(damped[:, 1:] @ inverse[g])
            h_q = q_first[g].matmul(self.H[g, :1, 1:] @ inverse[g])
            current[g, :, 1:] = g_w - h_q
        del self.G, self.H
        return inverse

def diffuse_errors(current, quantized, upper, quantize, blocksize, first=0):
    """GPTQ's column loop (also Qronos' steps 2+): round columns `first`.. of `current` into
    `quantized`, block by block, spreading each rounding error over the columns still to come
    with the upper Cholesky factor of the inverse covariance (`upper[k]` belongs to column
    `first + k`). All groups at once; the products are Brevitas' (see _matmul_per_group)."""
    columns = current.shape[-1]
    for i1 in range(first, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        j1, j2 = i1 - first, i2 - first  # the same columns in `upper`
        errors = torch.zeros_like(current[:, :, i1:i2])
        block = upper[:, j1:j2, j1:j2]
        for i in range(i2 - i1):
            quantized[:, :, i1 + i] = quantize(current[:, :, i1 + i])
            error = (current[:, :, i1 + i] - quantized[:, :, i1 + i]) / block[:, i, i, None]
            errors[:, :, i] = error
            current[:, :, i1 + i:i2] -= error.unsqueeze(-1) * block[:, i, i:].unsqueeze(1)
        current[:, :, i2:] -= _matmul_per_group(errors, upper[:, j1:j2, j2:])
    return quantized


# ------------------------------------------------------------------------------------- GPTQ
class FastGPTQ(_FastGPxQ, GPTQ):
    """Brevitas' GPTQ (`brevitas.graph.gptq.GPTQ`) with its column loop vectorized over groups.

    Brevitas rounds one column at a time and then, group by group, subtracts its error from the
    columns after it (a depthwise conv is groups x 9 steps); here every group moves at once.
    """

    def single_layer_update(self, percdamp=.01, c=1e4):
        quantize = self.column_quantizer()
        if quantize is None:
            return super().single_layer_update(percdamp, c)
        if self.use_intermediate_buffer:
            del self.B
        weight = _grouped(self.layer, self.layer.weight.data)
        dead = self.H.diagonal(dim1=1, dim2=2) == 0
        self.H.diagonal(dim1=1, dim2=2)[dead] = 1  # as Brevitas: no division by zero below
        weight.masked_fill_(dead.unsqueeze(1).to(weight.device), 0)
        perm = self._order()
        try:
            upper = self._inverse_factor(percdamp, c)
        except LinAlgError:
            warnings.warn(f"Failed to compute the inverse of the Hessian for layer {self.name} "
                          "GPTQ will not be applied. Increasing the number of samples might fix "
                          "this issue")  # Brevitas' warning
            return
        finally:
            del self.H
        perm, upper = perm.to(weight.device), upper.to(weight.device)
        current = _gather(weight, perm).to(self.dtype)
        quantized = diffuse_errors(current, torch.empty_like(current), upper, quantize, self.blocksize)
        _scatter(weight, perm, current)
        _check_rounding(self.layer, weight, quantized, perm)

    def _order(self):
        """The column order, [groups, in]: with act_order by each group's covariance diagonal
        (the covariances sorted to match, one argsort per group as Brevitas), else as they are."""
        if not self.act_order:
            return torch.arange(self.columns, device=self.H.device).expand(self.groups, -1)
        perm = torch.stack([torch.argsort(torch.diag(h), descending=True) for h in self.H])
        self.H = _permute_square(self.H, perm)
        return perm

    def _inverse_factor(self, percdamp, c):
        """The upper Cholesky factor of each group's damped inverse covariance, computed group
        by group in Brevitas' steps and order (a few small products per group)."""
        diag = torch.arange(self.columns, device=self.H.device)
        for h in self.H:
            h[diag, diag] += percdamp * torch.mean(torch.diag(h))
            h[:] = torch.linalg.cholesky(h)
            h[:] = torch.cholesky_inverse(h)
            h[:] = torch.linalg.cholesky(h * c, upper=True) / math.sqrt(c)
        return self.H


# --------------------------------------------------------------------- passes over the data
class GraphRun:
    """A graph model run node by node on every batch at once (Brevitas' fx Interpreter, one per
    batch), keeping only the values that later nodes still need."""

    def __init__(self, model, images):
        self.interpreters = []
        for batch in images:
            interpreter = Interpreter(model)
            interpreter.env, interpreter.args_iter = {}, iter([batch])
            self.interpreters.append(interpreter)

    def inputs(self, node):
        """The positional arguments of `node` for every batch."""
        return [interpreter.fetch_args_kwargs_from_env(node)[0] for interpreter in self.interpreters]

    def step(self, node):
        """Compute `node` for every batch and drop the values it used for the last time."""
        for interpreter in self.interpreters:
            interpreter.env[node] = interpreter.run_node(node)
            for used in interpreter.user_to_last_uses.get(node, []):
                del interpreter.env[used]


def _nbytes(value):
    if isinstance(value, torch.Tensor):
        return value.nbytes
    if isinstance(value, QuantTensor):
        return value.value.nbytes
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(item) for item in value)
    return 0


def pass_bytes(model, images, runs=2):
    """About the most bytes a one-image pass keeps alive at once over `images` (the batches): the
    peak of one image's live values in a node-by-node run, times the images, times the `runs`
    (run_gpfq_mode: 2, quantized and float; run_gptq_mode: 1). One image runs through the model
    to measure it."""
    run, peak = GraphRun(model, [images[0][:1]]), 0
    env = run.interpreters[0].env
    for node in model.graph.nodes:
        run.step(node)
        peak = max(peak, sum(_nbytes(value) for value in env.values()))
    return runs * peak * sum(len(batch) for batch in images)


def available_bytes(device):
    """Free memory where `device`'s tensors live: the GPU's, or MemAvailable of /proc/meminfo;
    None where neither can be read."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@contextmanager
def in_float(model, node):
    """Quantization off for the module that `node` calls, as gpfq_mode switches it off for the
    whole model around each float pass (Brevitas' own `quantization_status_manager`)."""
    if node.op != "call_module":
        yield  # functions (the residual Adds) hold no quantizer
        return
    with quantization_status_manager(
            model.get_submodule(node.target), disable_act_quant=True, disable_weight_quant=True,
            disable_bias_quant=True, is_training=False):
        yield


def _feed(optimizer, module, args, current_layer):
    """Hand one batch's input of `module` to the layer's optimizer, as gpfq_mode's hook does."""
    try:
        optimizer.update_batch(module, args, current_layer)
    except StopFwdException:
        pass


@torch.no_grad()
def run_gpfq_mode(images, model, algorithm_impl, act_order=False, desc="GPFQ", mode=gpfq_mode):
    """Optimize the weights of every quantized layer of the graph `model` in Brevitas'
    `gpfq_mode` with `algorithm_impl` (FastGPFQ, FastQronos), in one pass over `images`.

    `images` is the list of calibration batches; the weight quantizers must be initialized (one
    quantized forward pass). As in Brevitas, the layers are optimized in execution order, each
    on its input in the quantized model (all layers before it optimized) and in the float model.
    Each node runs twice per batch, quantized and in float, with only its own module switched.
    `mode`: gpfq_mode or a variant of it (AXE's a2gpfq_mode, which hands its own layers to A2GPFQ).
    """
    with mode(model, act_order=act_order, algorithm_impl=algorithm_impl) as gpxq:
        _one_pass(images, model, gpxq, desc, float_inputs=True)
    return model


@torch.no_grad()
def run_gptq_mode(images, model, act_order=False, desc="GPTQ", mode=gptq_mode):
    """GPTQ (FastGPTQ) in Brevitas' `gptq_mode` (or a variant, as run_gpfq_mode's `mode`), in one
    pass over `images`, as run_gpfq_mode: GPTQ needs each layer's input in the quantized model
    only, so each node runs once per batch."""
    with mode(model, act_order=act_order, gptq_class=FastGPTQ) as gpxq:
        _one_pass(images, model, gpxq, desc, float_inputs=False)
    return model


def _one_pass(images, model, gpxq, desc, float_inputs):
    """Run the graph node by node over all batches, optimizing each layer of `gpxq` when the pass
    reaches it; with `float_inputs`, each layer's float input follows its quantized one."""
    quant_run = GraphRun(model, images)
    float_run = GraphRun(model, images) if float_inputs else None
    layers, done = gpxq.gpxq_layers, set()
    with tqdm(total=len(layers), desc=desc, leave=False, dynamic_ncols=True) as progress:
        for node in model.graph.nodes:
            if len(done) == len(layers):
                break  # the rest of the graph feeds no layer
            # a layer called twice is optimized at its first call, as Brevitas' hook does
            if node.op == "call_module" and node.target in layers and node.target not in done:
                _optimize(node, model, gpxq, quant_run, float_run)
                done.add(node.target)
                progress.update()
            quant_run.step(node)
            if float_run is not None:
                with in_float(model, node):
                    float_run.step(node)


def _optimize(node, model, gpxq, quant_run, float_run):
    """Feed the layer that `node` calls its input from every batch, then update its weights.
    Batch by batch, quantized input first: Brevitas' GPFQ update_batch pairs them."""
    layer, module = gpxq.gpxq_layers[node.target], model.get_submodule(node.target)
    float_inputs = float_run.inputs(node) if float_run is not None else None
    for index, quant_args in enumerate(quant_run.inputs(node)):
        _feed(layer, module, quant_args, gpxq.current_layer)
        if float_inputs is not None:
            with in_float(model, node):
                _feed(layer, module, float_inputs[index], gpxq.current_layer)
    gpxq.update()
