"""The unit graph of a feed-forward network, read from its torch.fx trace, and emergence on it.

**Units** are the channels (features, for linear layers) of each *unit layer*: the output of
each call of a nonlinear activation (ReLU, GELU, SiLU, Tanh, Sigmoid, ..., module or function),
one layer per call site (a module called twice gives two layers, named `path` and `path:2`).
The input and the output (softmax over classes) are optional unit layers. A unit is active when
its per-unit statistics on the probe set (conv maps averaged over positions) pass an activity
rule (`rules.py`).

**Routes** between consecutive unit layers go through operations that are not activations: a
Linear or Conv with `groups = g` connects every input channel of a group to every output channel
of that group; channel-wise operations (normalization, pooling, dropout, scaling, padding,
identity, a mean over positions) connect channel c to channel c; a flatten before a Linear maps
every position of channel c to channel c's unit; a sum (a residual add) keeps the routes of each
of its inputs, so two branches that carry the same unit give two routes; a concatenation keeps
each input's channels at their offsets. Units removed by structured pruning (its `units_mask`)
have no routes and are not counted; unstructured pruning never changes a layer's unit count.

**E** is the number of routes, through units of any intermediate layers, from an inactive unit
to an active unit of a later layer, computed exactly in `counting.py` (Python integers) in
topological order: P(v) = sum over routes w -> v of (P(w) + [w inactive]), E = sum over
active v of P(v).

Worked example (tests/test_unitgraph.py): hidden layers A, B, C of 3 units,
`a = relu(fc1(x)); b = relu(fc2(a)); c = relu(fc3(b) + a)` with one shared `nn.ReLU`, active
A = {0}, B = {1, 2}, C = {1}. Without the skip, E = 2*2 + 2*3*1 + 1*1 = 11 (the paper's chain
formula); the skip adds the route from A's inactive unit 1 to C's active unit 1: E = 12.

A graph this cannot read (data-dependent control flow, an operation it does not know) is an
error that names the operation and the module, never a silent count.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

UNIT_LAYER_KINDS = ("input", "hidden", "output")

ACTIVATION_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
    nn.SiLU, nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Tanh, nn.Sigmoid,
    nn.Softplus, nn.Softsign, nn.LogSigmoid, nn.Tanhshrink,
)
ACTIVATION_FUNCTIONS = {
    F.relu, F.relu_, torch.relu, torch.relu_, F.relu6, F.leaky_relu, F.leaky_relu_, F.prelu,
    F.rrelu, F.elu, F.elu_, F.selu, F.celu, F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid,
    F.hardtanh, F.hardtanh_, torch.tanh, F.tanh, torch.sigmoid, F.sigmoid, F.softplus,
    F.softsign, F.logsigmoid, F.tanhshrink,
}
ACTIVATION_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_"}
DENSE_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
CHANNEL_MODULES = (
    nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm, nn.LocalResponseNorm,
    nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.dropout._DropoutNd, nn.Identity, nn.modules.padding._ConstantPadNd,
    nn.modules.padding._ReflectionPadNd, nn.modules.padding._ReplicationPadNd, nn.Upsample,
)
CHANNEL_FUNCTIONS = {
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool1d,
    F.adaptive_max_pool2d, F.adaptive_max_pool3d, F.dropout, F.dropout1d, F.dropout2d,
    F.dropout3d, F.alpha_dropout, F.pad, F.interpolate, F.batch_norm, F.layer_norm, F.group_norm,
    F.instance_norm, torch.clone,
}
CHANNEL_METHODS = {"contiguous", "clone", "float", "double", "half", "to", "type_as", "detach"}
# Ops judged by shapes: (N, C, ...) -> (N, C) is channel-wise (a mean over positions),
# (N, C, ...) -> (N, C * positions) a flatten, the same shape channel-wise.
RESHAPE_FUNCTIONS = {torch.flatten, torch.mean, torch.amax, torch.squeeze, torch.reshape}
RESHAPE_METHODS = {"flatten", "view", "reshape", "mean", "amax", "squeeze", "view_as",
                   "reshape_as"}
SUM_FUNCTIONS = {operator.add, operator.iadd, torch.add, operator.sub, operator.isub, torch.sub,
                 operator.mul, operator.imul, torch.mul, operator.truediv, torch.div}
SUM_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"}
CAT_FUNCTIONS = {torch.cat, torch.concat}


class UnreadableGraph(ValueError):
    """The model's graph has an operation emergence cannot route through."""


@dataclass(frozen=True)
class Op:
    """One tensor of the traced graph, as the routes see it.

    kind: input (the network input), unit (a counted unit layer's output), pass (an activation
    not counted: channel c to channel c), dense (Linear/Conv: all to all within `groups`),
    channel (channel c to channel c), sum (the routes of every input), cat (inputs' channels
    at their offsets), output (the logits)."""

    name: str
    kind: str
    inputs: tuple[int, ...]
    channels: int
    module: str = ""  # dense and channel modules: the path whose parameters' masks say what lives
    groups: int = 1


@dataclass
class UnitGraph:
    """The ops of a traced network in topological order, its counted unit layers (name -> op
    index, in forward order), and `module`: the traced model returning the per-sample unit
    activations of those layers, (samples, units), conv maps averaged over positions."""

    ops: list[Op]
    layers: dict[str, int]
    module: fx.GraphModule

    def alive(self, model: nn.Module) -> list[torch.Tensor]:
        """Per op, which channels carry anything. Units are units: only structured pruning
        removes one. A Linear/Conv output channel is removed when the module's `units_mask`
        (written by structured pruning) says so, or, in networks pruned before that buffer
        existed, when its weights and its bias are all masked (unstructured pruning never masks
        a bias); a bias-free layer's row masked by unstructured pruning keeps its unit. A
        normalization channel lives while its input does or its bias is unmasked; sums live
        where any input does."""
        modules = dict(model.named_modules())
        alive: list[torch.Tensor] = []
        for op in self.ops:
            ins = [alive[i] for i in op.inputs]
            if op.kind == "input":
                keep = torch.ones(op.channels, dtype=torch.bool)
            elif op.kind == "dense":
                keep = _units_alive(modules[op.module], op.channels)
            elif op.kind == "channel" and op.module:
                keep = ins[0] | _bias_alive(modules[op.module], op.channels)
            elif op.kind == "sum":
                keep = torch.zeros(op.channels, dtype=torch.bool)
                for a in ins:
                    keep = keep | a
            elif op.kind == "cat":
                keep = torch.cat(ins)
            else:
                keep = ins[0]
            alive.append(keep)
        return alive


def _probe_module(traced: fx.GraphModule, ops: list[Op], layers: dict[str, int]) -> fx.GraphModule:
    """The traced model with a (samples, units) output per counted layer instead of logits."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    wanted = {ops[i].name: name for name, i in layers.items() if name != "output"}
    taken: dict[str, fx.Node] = {}
    for node in traced.graph.nodes:
        if node.op == "output":
            if "output" in layers:
                taken["output"] = graph.call_function(_softmax_units, (env[node.args[0]],))
            graph.output(tuple(taken[name] for name in layers))
            break
        env[node] = graph.node_copy(node, lambda n: env[n])
        if node.name in wanted:
            taken[wanted[node.name]] = graph.call_function(_units, (env[node],))
    return fx.GraphModule(traced, graph)


def _units(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(2).mean(dim=2) if t.dim() > 2 else t


def _softmax_units(t: torch.Tensor) -> torch.Tensor:
    return _units(t.softmax(dim=1))


def _units_alive(m: nn.Module, channels: int) -> torch.Tensor:
    units = getattr(m, "units_mask", None)
    if units is not None:
        return (units != 0).cpu()
    bias, w_mask = getattr(m, "bias", None), getattr(m, "weight_mask", None)
    if not isinstance(bias, torch.Tensor) or w_mask is None:
        return torch.ones(channels, dtype=torch.bool)
    return w_mask.flatten(1).any(dim=1).cpu() | _bias_alive(m, channels)


def _bias_alive(m: nn.Module, channels: int) -> torch.Tensor:
    bias = getattr(m, "bias", None)
    if not isinstance(bias, torch.Tensor):
        return torch.zeros(channels, dtype=torch.bool)
    mask = getattr(m, "bias_mask", None)
    return torch.ones(channels, dtype=torch.bool) if mask is None else (mask != 0).cpu()


def _module_path(node: fx.Node) -> str:
    """The path of the innermost module whose forward made this node ("" for the model's)."""
    stack = node.meta.get("nn_module_stack") or {}
    return next(reversed(stack.values()))[0] if stack else ""


def _where(node: fx.Node) -> str:
    path = _module_path(node)
    return f"in module '{path}'" if path else "in the model's forward"


def _what(node: fx.Node) -> str:
    target = node.target
    if node.op == "call_function":
        return f"{getattr(target, '__module__', '') or ''}.{getattr(target, '__name__', target)}"
    if node.op == "call_method":
        return f"Tensor.{target}"
    return str(target)


def symbolic(model: nn.Module) -> fx.GraphModule:
    """`torch.fx.symbolic_trace`, failing with the model's name and what fx could not follow."""
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:
        raise UnreadableGraph(
            f"cannot trace {type(model).__name__} with torch.fx ({type(exc).__name__}: {exc}); "
            f"emergence needs a forward without data-dependent control flow") from None


def trace(model: nn.Module, example: torch.Tensor) -> tuple[fx.GraphModule, dict[str, tuple]]:
    """The model's fx graph and each tensor node's shape (one eval-mode forward of `example`)."""
    traced = symbolic(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ShapeProp(traced).propagate(example)
    except Exception as exc:
        raise ValueError(f"{type(model).__name__} fails on an input of shape "
                         f"{tuple(example.shape)}: {type(exc).__name__}: {exc}") from None
    finally:
        model.train(was_training)
    shapes = {n.name: tuple(n.meta["tensor_meta"].shape) for n in traced.graph.nodes
              if isinstance(n.meta.get("tensor_meta"), fx.passes.shape_prop.TensorMetadata)}
    return traced, shapes


def unit_graph(model: nn.Module, example: torch.Tensor,
               kinds: Sequence[str] = ("hidden",)) -> UnitGraph:
    """Read the unit graph of `model` from a torch.fx trace; `example` is one input batch
    (its shapes size the channels). kinds: the counted unit layers (input, hidden, output)."""
    unknown = sorted(set(kinds) - set(UNIT_LAYER_KINDS))
    if unknown:
        raise ValueError(f"unknown unit layers {unknown}; valid: {list(UNIT_LAYER_KINDS)}")
    traced, shapes = trace(model, example)
    modules = dict(model.named_modules())
    ops: list[Op] = []
    index: dict[str, int] = {}
    layers: dict[str, int] = {}
    calls: dict[str, int] = {}
    flattened: set[int] = set()  # ops whose features are positions grouped by channel

    def add(node: fx.Node, kind: str, inputs: Sequence[int], channels: int, **kw) -> int:
        ops.append(Op(node.name, kind, tuple(inputs), channels, **kw))
        index[node.name] = len(ops) - 1
        return len(ops) - 1

    def tensor_inputs(node: fx.Node) -> list[int]:
        return [index[a.name] for a in node.all_input_nodes if a.name in index]

    def fail(node: fx.Node, why: str) -> UnreadableGraph:
        return UnreadableGraph(f"emergence cannot route through {_what(node)} (node "
                               f"'{node.name}', {_where(node)}): {why}")

    placeholders = [n for n in traced.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise UnreadableGraph(f"{type(model).__name__}.forward takes {len(placeholders)} inputs; "
                              f"emergence reads networks with one input tensor")
    for node in traced.graph.nodes:
        if node.op == "output":
            out = node.args[0]
            if not isinstance(out, fx.Node) or out.name not in index:
                raise fail(node, "the forward must return one tensor of logits")
            if "output" in kinds:
                i = index[out.name]
                op = ops[i]
                add(node, "unit", [i], op.channels)
                layers["output"] = len(ops) - 1
            break
        shape = shapes.get(node.name)
        if shape is None:  # sizes, attributes: not routes
            continue
        channels = shape[1] if len(shape) > 1 else 1
        ins = tensor_inputs(node)
        target = node.target
        if node.op == "placeholder":
            i = add(node, "input", [], channels)
            if "input" in kinds:
                layers["input"] = i
            continue
        if node.op == "get_attr":
            add(node, "input", [], channels)  # a constant tensor: no routes from it
            continue
        module = modules.get(target) if node.op == "call_module" else None
        if module is not None and len(ins) != 1:
            raise fail(node, f"a module called with {len(ins)} tensor inputs")
        if (isinstance(module, ACTIVATION_MODULES) or (node.op == "call_function" and target in
                ACTIVATION_FUNCTIONS) or (node.op == "call_method" and target in ACTIVATION_METHODS)):
            if ins[0] in flattened:
                raise fail(node, "an activation on flattened conv features")
            base = target if node.op == "call_module" else _site(node)
            calls[base] = calls.get(base, 0) + 1
            name = base if calls[base] == 1 else f"{base}:{calls[base]}"
            counted = "hidden" in kinds
            i = add(node, "unit" if counted else "pass", ins[:1], channels)
            if counted:
                layers[name] = i
        elif isinstance(module, DENSE_MODULES):
            if len(shape) > 2 and isinstance(module, nn.Linear):
                raise fail(node, f"a Linear applied to a {len(shape)}-d tensor (its features "
                                 f"are not dimension 1)")
            add(node, "dense", ins, channels, module=target, groups=getattr(module, "groups", 1))
        elif isinstance(module, CHANNEL_MODULES) or (
                node.op == "call_function" and target in CHANNEL_FUNCTIONS) or (
                node.op == "call_method" and target in CHANNEL_METHODS):
            if shapes.get(node.all_input_nodes[0].name, (None, None))[:2] != shape[:2]:
                raise fail(node, "a channel-wise operation that changes the batch or channels")
            i = add(node, "channel", ins[:1], channels,
                     module=target if module is not None else "")
            if ins[0] in flattened:
                flattened.add(i)
        elif (isinstance(module, nn.Flatten) or (node.op == "call_function" and target in
              RESHAPE_FUNCTIONS) or (node.op == "call_method" and target in RESHAPE_METHODS)):
            src = node.all_input_nodes[0]
            before = shapes[src.name]
            j = index[src.name]
            if len(shape) == 2 and len(before) > 2 and shape[:2] == before[:2]:
                add(node, "channel", [j], channels)  # a mean over positions, a squeeze
            elif before == shape:
                i = add(node, "channel", [j], channels)
                if j in flattened:
                    flattened.add(i)
            elif (len(shape) == 2 and len(before) > 2 and shape[0] == before[0]
                    and shape[1] == math.prod(before[1:])):
                if ops[j].kind == "input" and "input" in kinds:
                    # The network reads its input as features (an MLP): every feature is a unit.
                    layers["input"] = add(node, "input", [], shape[1])
                else:
                    flattened.add(add(node, "channel", [j], before[1]))  # grouped by channel
            else:
                raise fail(node, f"a reshape from {before} to {shape} (only flattening the "
                                 f"positions of each channel, or a mean over them)")
        elif (node.op == "call_function" and target in SUM_FUNCTIONS) or (
                node.op == "call_method" and target in SUM_METHODS):
            ins = [index[a.name] for a in node.args if isinstance(a, fx.Node) and a.name in index]
            if len(ins) == 1:
                add(node, "channel", ins, channels)  # scaling or shifting by a constant
            else:
                for j in ins:
                    if ops[j].channels not in (channels, 1):
                        raise fail(node, f"inputs of {ops[j].channels} and {channels} channels")
                add(node, "sum", ins, channels)
        elif node.op == "call_function" and target in CAT_FUNCTIONS:
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
            if dim not in (1, 1 - len(shape)) or len(shape) < 2:
                raise fail(node, f"a concatenation along dimension {dim} (only channels, 1)")
            parts = node.args[0] if node.args else node.kwargs["tensors"]
            add(node, "cat", [index[a.name] for a in parts], channels)
        else:
            kind = f"module {type(module).__name__}" if module is not None else "an operation"
            raise fail(node, f"{kind} it does not know; emergence knows activations, "
                             f"Linear/Conv, channel-wise ops, flatten, sums and concatenation")
    return UnitGraph(ops, layers, _probe_module(traced, ops, layers))


def cached_unit_graph(model: nn.Module, example: torch.Tensor,
                      kinds: Sequence[str] = ("hidden",)) -> UnitGraph:
    """`unit_graph`, traced once per model, input shape and layer kinds (kept on the model, as
    `models.forward_order` keeps its order): a training run's architecture does not change
    (pruning masks values), so its epochs need not trace it again."""
    cache = model.__dict__.setdefault("_unit_graphs", {})
    key = (tuple(kinds), tuple(example.shape[1:]))
    if key not in cache:
        cache[key] = unit_graph(model, example, kinds)
    return cache[key]


def _site(node: fx.Node) -> str:
    """A functional activation's layer name: its module's path and the function."""
    path = _module_path(node)
    fn = getattr(node.target, "__name__", str(node.target))
    return f"{path}/{fn}" if path else fn
