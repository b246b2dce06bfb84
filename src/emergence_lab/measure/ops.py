"""The per-op routes of the unit graph: one entry per family of torch operations (activations,
Linear/Conv, channel-wise ops, reshapes, sums, concatenation), each a test of a traced node and
the routes it adds. `graph.unit_graph` walks a trace and asks the table; an operation no entry
knows is an error that names it. Supporting another operation is one entry here.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

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
class Reader:
    """The state of reading one trace: the ops so far (topological order), each node's op index,
    the counted unit layers, how often each activation site was called, and which ops hold
    flattened conv features (positions grouped by channel)."""

    kinds: Sequence[str]
    shapes: dict[str, tuple]
    ops: list[Op] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    layers: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    flattened: set[int] = field(default_factory=set)

    def add(self, node: fx.Node, kind: str, inputs: Sequence[int], channels: int, **kw) -> int:
        self.ops.append(Op(node.name, kind, tuple(inputs), channels, **kw))
        self.index[node.name] = len(self.ops) - 1
        return len(self.ops) - 1

    def tensor_inputs(self, node: fx.Node) -> list[int]:
        return [self.index[a.name] for a in node.all_input_nodes if a.name in self.index]


def fail(node: fx.Node, why: str) -> UnreadableGraph:
    return UnreadableGraph(f"emergence cannot route through {_what(node)} (node "
                           f"'{node.name}', {_where(node)}): {why}")


@dataclass(frozen=True)
class Node:
    """A traced node as the routes see it: its module (call_module), output shape, channels
    and tensor inputs (op indices)."""

    node: fx.Node
    module: nn.Module | None
    shape: tuple
    channels: int
    ins: list[int]


def _calls(modules: tuple, functions: set, methods: set) -> Callable[[Node], bool]:
    """A test: the node calls one of these module classes, functions or Tensor methods."""
    def test(n: Node) -> bool:
        op, target = n.node.op, n.node.target
        return (isinstance(n.module, modules) or (op == "call_function" and target in functions)
                or (op == "call_method" and target in methods))
    return test


def _activation(r: Reader, n: Node) -> None:
    if n.ins[0] in r.flattened:
        raise fail(n.node, "an activation on flattened conv features")
    base = n.node.target if n.node.op == "call_module" else _site(n.node)
    r.calls[base] = r.calls.get(base, 0) + 1
    name = base if r.calls[base] == 1 else f"{base}:{r.calls[base]}"
    counted = "hidden" in r.kinds
    i = r.add(n.node, "unit" if counted else "pass", n.ins[:1], n.channels)
    if counted:
        r.layers[name] = i


def _dense(r: Reader, n: Node) -> None:
    if len(n.shape) > 2 and isinstance(n.module, nn.Linear):
        raise fail(n.node, f"a Linear applied to a {len(n.shape)}-d tensor (its features are "
                           f"not dimension 1)")
    r.add(n.node, "dense", n.ins, n.channels, module=n.node.target,
          groups=getattr(n.module, "groups", 1))


def _channel(r: Reader, n: Node) -> None:
    if r.shapes.get(n.node.all_input_nodes[0].name, (None, None))[:2] != n.shape[:2]:
        raise fail(n.node, "a channel-wise operation that changes the batch or channels")
    i = r.add(n.node, "channel", n.ins[:1], n.channels,
              module=n.node.target if n.module is not None else "")
    if n.ins[0] in r.flattened:
        r.flattened.add(i)


def _reshape(r: Reader, n: Node) -> None:
    shape, src = n.shape, n.node.all_input_nodes[0]
    before, j = r.shapes[src.name], r.index[src.name]
    if len(shape) == 2 and len(before) > 2 and shape[:2] == before[:2]:
        r.add(n.node, "channel", [j], n.channels)  # a mean over positions, a squeeze
    elif before == shape:
        i = r.add(n.node, "channel", [j], n.channels)
        if j in r.flattened:
            r.flattened.add(i)
    elif (len(shape) == 2 and len(before) > 2 and shape[0] == before[0]
            and shape[1] == math.prod(before[1:])):
        if r.ops[j].kind == "input" and "input" in r.kinds:
            # The network reads its input as features (an MLP): every feature is a unit.
            r.layers["input"] = r.add(n.node, "input", [], shape[1])
        else:
            r.flattened.add(r.add(n.node, "channel", [j], before[1]))  # grouped by channel
    else:
        raise fail(n.node, f"a reshape from {before} to {shape} (only flattening the positions "
                           f"of each channel, or a mean over them)")


def _sum(r: Reader, n: Node) -> None:
    ins = [r.index[a.name] for a in n.node.args if isinstance(a, fx.Node) and a.name in r.index]
    if len(ins) == 1:
        r.add(n.node, "channel", ins, n.channels)  # scaling or shifting by a constant
        return
    for j in ins:
        if r.ops[j].channels not in (n.channels, 1):
            raise fail(n.node, f"inputs of {r.ops[j].channels} and {n.channels} channels")
    r.add(n.node, "sum", ins, n.channels)


def _cat(r: Reader, n: Node) -> None:
    node, shape = n.node, n.shape
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
    if dim not in (1, 1 - len(shape)) or len(shape) < 2:
        raise fail(node, f"a concatenation along dimension {dim} (only channels, 1)")
    parts = node.args[0] if node.args else node.kwargs["tensors"]
    r.add(node, "cat", [r.index[a.name] for a in parts], n.channels)


@dataclass(frozen=True)
class OpRoute:
    """An entry of the table: which nodes it reads (`test`) and the routes it adds (`read`)."""

    name: str
    test: Callable[[Node], bool]
    read: Callable[[Reader, Node], None]


OP_ROUTES: list[OpRoute] = [  # first match wins
    OpRoute("activation", _calls(ACTIVATION_MODULES, ACTIVATION_FUNCTIONS, ACTIVATION_METHODS),
            _activation),
    OpRoute("dense", _calls(DENSE_MODULES, set(), set()), _dense),
    OpRoute("channel", _calls(CHANNEL_MODULES, CHANNEL_FUNCTIONS, CHANNEL_METHODS), _channel),
    OpRoute("reshape", _calls((nn.Flatten,), RESHAPE_FUNCTIONS, RESHAPE_METHODS), _reshape),
    OpRoute("sum", _calls((), SUM_FUNCTIONS, SUM_METHODS), _sum),
    OpRoute("cat", _calls((), CAT_FUNCTIONS, set()), _cat),
]


def read_node(r: Reader, n: Node) -> None:
    """Add the routes of one traced node, from the first entry of OP_ROUTES that reads it."""
    for route in OP_ROUTES:
        if route.test(n):
            route.read(r, n)
            return
    kind = f"module {type(n.module).__name__}" if n.module is not None else "an operation"
    raise fail(n.node, f"{kind} it does not know; emergence knows activations, Linear/Conv, "
                       f"channel-wise ops, flatten, sums and concatenation (measure.ops.OP_ROUTES)")


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


def _site(node: fx.Node) -> str:
    """A functional activation's layer name: its module's path and the function."""
    path = _module_path(node)
    fn = getattr(node.target, "__name__", str(node.target))
    return f"{path}/{fn}" if path else fn
