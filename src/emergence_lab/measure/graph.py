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

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from emergence_lab.measure.ops import Node, Op, Reader, UnreadableGraph, fail, read_node

UNIT_LAYER_KINDS = ("input", "hidden", "output")

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
    (its shapes size the channels). kinds: the counted unit layers (input, hidden, output).
    Each traced op is read by its entry of `ops.OP_ROUTES`."""
    unknown = sorted(set(kinds) - set(UNIT_LAYER_KINDS))
    if unknown:
        raise ValueError(f"unknown unit layers {unknown}; valid: {list(UNIT_LAYER_KINDS)}")
    traced, shapes = trace(model, example)
    modules = dict(model.named_modules())
    r = Reader(tuple(kinds), shapes)
    placeholders = [n for n in traced.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise UnreadableGraph(f"{type(model).__name__}.forward takes {len(placeholders)} inputs; "
                              f"emergence reads networks with one input tensor")
    for node in traced.graph.nodes:
        if node.op == "output":
            _read_output(r, node)
            break
        shape = shapes.get(node.name)
        if shape is None:  # sizes, attributes: not routes
            continue
        channels = shape[1] if len(shape) > 1 else 1
        if node.op in ("placeholder", "get_attr"):  # the input; a constant: no routes from it
            i = r.add(node, "input", [], channels)
            if node.op == "placeholder" and "input" in kinds:
                r.layers["input"] = i
            continue
        module = modules.get(node.target) if node.op == "call_module" else None
        ins = r.tensor_inputs(node)
        if module is not None and len(ins) != 1:
            raise fail(node, f"a module called with {len(ins)} tensor inputs")
        read_node(r, Node(node, module, shape, channels, ins))
    return UnitGraph(r.ops, r.layers, _probe_module(traced, r.ops, r.layers))


def _read_output(r: Reader, node: fx.Node) -> None:
    out = node.args[0]
    if not isinstance(out, fx.Node) or out.name not in r.index:
        raise fail(node, "the forward must return one tensor of logits")
    if "output" in r.kinds:
        i = r.index[out.name]
        r.layers["output"] = r.add(node, "unit", [i], r.ops[i].channels)


def forget_unit_graphs(model: nn.Module) -> nn.Module:
    """The model without its cached unit graphs (a traced GraphModule does not pickle back);
    the next `cached_unit_graph` traces again."""
    model.__dict__.pop("_unit_graphs", None)
    return model


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


