"""Evaluate a KerasModel with NumPy, following Keras 3's (and, for hard_sigmoid and masking a
recurrent call given states, Keras 2's) rules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from seqserve.keras.config import keras3_tensors
from seqserve.keras.model import KerasModel, Layer, LayerCall, TensorRef

Array = np.ndarray
Masked = tuple[Array, Array | None]  # a value and its [batch, time] mask


class NoReference(Exception):
    """The model holds a layer class this reference does not implement."""


def _sigmoid(x: Array) -> Array:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _softplus(x: Array) -> Array:
    return np.logaddexp(0.0, x)


def _erf(x: Array) -> Array:
    from math import erf

    return np.vectorize(erf)(x)


def activation_fn(name: Any, keras_major: int) -> Callable[[Array], Array]:
    if name is None:
        name = "linear"
    if isinstance(name, dict):
        name = name.get("config")
    hs = (lambda x: np.clip(x / 6.0 + 0.5, 0, 1)) if keras_major >= 3 else (lambda x: np.clip(0.2 * x + 0.5, 0, 1))
    table: dict[str, Callable[[Array], Array]] = {
        "linear": lambda x: x,
        "tanh": np.tanh,
        "sigmoid": _sigmoid,
        "relu": lambda x: np.maximum(x, 0),
        "relu6": lambda x: np.clip(x, 0, 6),
        "leaky_relu": lambda x: np.where(x >= 0, x, 0.2 * x),
        "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
        "selu": lambda x: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(np.minimum(x, 0))),
        "celu": lambda x: np.maximum(x, 0) + np.minimum(0, np.expm1(np.minimum(x, 0))),
        "softplus": _softplus,
        "softsign": lambda x: x / (1 + np.abs(x)),
        "exponential": np.exp,
        "hard_sigmoid": hs,
        "hard_silu": lambda x: x * np.clip(x / 6.0 + 0.5, 0, 1),
        "hard_swish": lambda x: x * np.clip(x / 6.0 + 0.5, 0, 1),
        "silu": lambda x: x * _sigmoid(x),
        "swish": lambda x: x * _sigmoid(x),
        "gelu": lambda x: 0.5 * x * (1 + _erf(x / np.sqrt(2.0))),
        "mish": lambda x: x * np.tanh(_softplus(x)),
        "softmax": lambda x: (
            np.exp(x - x.max(-1, keepdims=True)) / np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)
        ),
        "log_softmax": lambda x: (
            x - x.max(-1, keepdims=True) - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True))
        ),
        "tanh_shrink": lambda x: x - np.tanh(x),
        "hard_tanh": lambda x: np.clip(x, -1, 1),
        "soft_shrink": lambda x: np.where(x > 0.5, x - 0.5, np.where(x < -0.5, x + 0.5, 0.0)),
        "hard_shrink": lambda x: np.where(np.abs(x) > 0.5, x, 0.0),
        "log_sigmoid": lambda x: -_softplus(-x),
        "sparse_sigmoid": lambda x: np.clip(0.5 * x + 0.5, 0, 1),
        "squareplus": lambda x: (x + np.sqrt(x * x + 4.0)) / 2.0,
        "sparse_plus": lambda x: np.where(x <= -1, 0.0, np.where(x >= 1, x, (x + 1) ** 2 / 4)),
    }
    if name not in table:
        raise NoReference(f"activation {name!r}")
    return table[name]


# ------------------------------------------------------------------------------------ cells


class _Cell:
    def __init__(self, cls: str, cfg: dict[str, Any], weights: list[Array], keras_major: int) -> None:
        self.kind = {
            "LSTM": "lstm",
            "LSTMCell": "lstm",
            "CuDNNLSTM": "lstm",
            "GRU": "gru",
            "GRUCell": "gru",
            "CuDNNGRU": "gru",
            "SimpleRNN": "simple",
            "SimpleRNNCell": "simple",
        }.get(cls)
        if self.kind is None:
            raise NoReference(cls)
        cudnn = cls.startswith("CuDNN")
        self.units = int(cfg["units"])
        self.kernel = weights[0].astype(np.float64)
        self.rkernel = weights[1].astype(np.float64)
        self.bias = weights[2].astype(np.float64) if len(weights) > 2 else None
        self.reset_after = cudnn or bool(cfg.get("reset_after", keras_major >= 3))
        self.act = activation_fn("tanh" if cudnn else cfg.get("activation", "tanh"), keras_major)
        self.rec = activation_fn("sigmoid" if cudnn else cfg.get("recurrent_activation", "sigmoid"), keras_major)
        self.n_states = 2 if self.kind == "lstm" else 1

    def step(self, x: Array, states: list[Array]) -> list[Array]:
        u, h = self.units, states[0]
        if self.kind == "simple":
            z = x @ self.kernel + (self.bias if self.bias is not None else 0) + h @ self.rkernel
            return [self.act(z)]
        if self.kind == "lstm":
            z = x @ self.kernel + h @ self.rkernel + (self.bias if self.bias is not None else 0)
            i, f, g, o = (z[:, k * u : (k + 1) * u] for k in range(4))
            c = self.rec(f) * states[1] + self.rec(i) * self.act(g)
            return [self.rec(o) * self.act(c), c]
        if self.bias is None:
            bx, bh = 0.0, 0.0
        elif self.reset_after:
            bx, bh = self.bias[0], self.bias[1]
        else:
            bx, bh = self.bias, 0.0
        xz = x @ self.kernel + bx
        if self.reset_after:
            hz = h @ self.rkernel + bh
            z = self.rec(xz[:, :u] + hz[:, :u])
            r = self.rec(xz[:, u : 2 * u] + hz[:, u : 2 * u])
            hh = self.act(xz[:, 2 * u :] + r * hz[:, 2 * u :])
        else:
            z = self.rec(xz[:, :u] + h @ self.rkernel[:, :u])
            r = self.rec(xz[:, u : 2 * u] + h @ self.rkernel[:, u : 2 * u])
            hh = self.act(xz[:, 2 * u :] + (r * h) @ self.rkernel[:, 2 * u :])
        return [z * h + (1 - z) * hh]


def _cells(cls: str, cfg: dict[str, Any], weights: list[Array], km: int) -> tuple[list[_Cell], int]:
    if cls == "RNN":
        spec = cfg.get("cell")
        if isinstance(spec, dict) and spec.get("class_name") == "StackedRNNCells":
            specs = (spec.get("config") or {}).get("cells") or []
        else:
            specs = spec if isinstance(spec, list) else [spec]
        pairs = [(str(s.get("class_name")), s.get("config") or {}) for s in specs]
    else:
        pairs = [(cls, cfg)]
    out, pos = [], 0
    for c, ccfg in pairs:
        n = 3 if (ccfg.get("use_bias", True) or c.startswith("CuDNN")) else 2
        out.append(_Cell(c, ccfg, weights[pos : pos + n], km))
        pos += n
    return out, pos


def _recur(
    cells: list[_Cell],
    x: Array,
    mask: Array | None,
    init: list[Array],
    go_backwards: bool,
    zero_output_for_mask: bool,
) -> tuple[Array, Array, list[Array]]:
    """(all outputs [B,T,U] in processing order, last output, final states)."""
    states = [s.astype(np.float64) for s in init]
    prev = np.zeros((x.shape[0], cells[-1].units))
    outs = []
    steps = range(x.shape[1] - 1, -1, -1) if go_backwards else range(x.shape[1])
    for t in steps:
        inp, new, pos = x[:, t], [], 0
        for cell in cells:
            s = cell.step(inp, states[pos : pos + cell.n_states])
            new.extend(s)
            inp = s[0]
            pos += cell.n_states
        out = inp
        if mask is not None:
            m = mask[:, t][:, None]
            new = [np.where(m, n, o) for n, o in zip(new, states, strict=False)]
            out = np.where(m, out, 0.0 if zero_output_for_mask else prev)
        states, prev = new, out
        outs.append(out)
    return np.stack(outs, axis=1), outs[-1], states


# ----------------------------------------------------------------------------------- layers


class _Runner:
    def __init__(self, model: KerasModel, states: dict[str, Array]) -> None:
        self.model = model
        self.km = model.keras_major
        self.states_in = states
        self.states_out: dict[str, Array] = {}
        self.call_index = 0
        # Keras runs the current call without its input's mask (Keras 3, a call given states).
        self.unmasked = False

    def state(self, layer: str, kind: str, batch: int, units: int) -> Array:
        v = self.states_in.get(f"{layer}.{kind}")
        return np.zeros((batch, units)) if v is None else np.asarray(v, np.float64)

    def recurrent(
        self,
        layer: Layer,
        cls: str,
        cfg: dict[str, Any],
        weights: list[Array],
        x: Masked,
        init: list[Array],
        prefix: str,
        zero_out: bool | None,
    ) -> tuple[Masked, list[Array], int]:
        cells, used = _cells(cls, cfg, weights, self.km)
        kinds = (
            ["h", "c"][: cells[0].n_states]
            if len(cells) == 1
            else [f"cell{j}_{k}" for j, c in enumerate(cells) for k in ["h", "c"][: c.n_states]]
        )
        widths = [c.units for c in cells for _ in range(c.n_states)]
        owner = layer.name if self.call_index == 0 else f"{layer.name}@{self.call_index}"
        if not init:
            init = [self.state(owner, prefix + k, x[0].shape[0], w) for k, w in zip(kinds, widths, strict=False)]
        rs = bool(cfg.get("return_sequences", False))
        zo = bool(cfg.get("zero_output_for_mask", False)) if zero_out is None else zero_out
        mask = None if self.unmasked else x[1]
        seq, last, finals = _recur(cells, x[0], mask, init, bool(cfg.get("go_backwards", False)), zo)
        for k, v in zip(kinds, finals, strict=False):
            self.states_out[f"{owner}.{prefix}{k}"] = v
        return ((seq, x[1]) if rs else (last, None)), finals, used

    def op(self, cls: str, cfg: dict[str, Any], ins: list[Masked], args: list[Any]) -> Array:
        """Keras op layers (mask computations recorded in functional configs)."""
        it = iter(ins)
        operands = [next(it)[0] if isinstance(a, dict) else a for a in args]
        x = ins[0][0]
        binary = {
            "NotEqual": np.not_equal,
            "Equal": np.equal,
            "Greater": np.greater,
            "Less": np.less,
            "LogicalOr": np.logical_or,
            "LogicalAnd": np.logical_and,
        }
        if cls in binary:
            return binary[cls](operands[0], operands[1])
        if cls == "LogicalNot":
            return np.logical_not(x)
        if cls in ("Any", "All"):
            axis = cfg.get("axis")
            f = np.any if cls == "Any" else np.all
            return f(x, axis=tuple(axis) if isinstance(axis, list) else axis, keepdims=bool(cfg.get("keepdims")))
        if cls == "ExpandDims":
            return np.expand_dims(x, int(cfg.get("axis", -1)))
        if cls == "Squeeze":
            axis = cfg.get("axis")
            return np.squeeze(x, tuple(axis) if isinstance(axis, list) else axis)
        if cls in ("ZerosLike", "OnesLike", "Cast"):
            dt = cfg.get("dtype")
            dt = dt.get("config", {}).get("name") if isinstance(dt, dict) else dt
            if cls == "Cast":
                return x.astype(dt or x.dtype)
            return (np.zeros_like if cls == "ZerosLike" else np.ones_like)(x, dtype=dt or x.dtype)
        if cls == "Concatenate":
            return np.concatenate([v[0] for v in ins], axis=int(cfg.get("axis", 0)))
        raise NoReference(cls)

    def call(self, layer: Layer, ins: list[Masked], init: list[Array], args: list[Any]) -> list[Masked]:
        cls, cfg, w = layer.class_name, layer.config, [np.asarray(a, np.float64) for a in layer.weights]
        x, m = ins[0]
        if cls in ("LSTM", "GRU", "SimpleRNN", "RNN", "CuDNNLSTM", "CuDNNGRU"):
            out, finals, _ = self.recurrent(layer, cls, cfg, w, ins[0], init, "", None)
            return [out, *[(s, None) for s in finals]] if cfg.get("return_state") else [out]
        if cls == "Bidirectional":
            f = cfg["layer"]
            fcls, fcfg = f["class_name"], dict(f.get("config") or {})
            bspec = cfg.get("backward_layer")
            bcls, bcfg = (
                (bspec["class_name"], dict(bspec.get("config") or {}))
                if isinstance(bspec, dict)
                else (fcls, dict(fcfg, go_backwards=not fcfg.get("go_backwards", False)))
            )
            half = len(init) // 2
            rs = bool(fcfg.get("return_sequences", False))
            y, fs, used = self.recurrent(layer, fcls, fcfg, w, ins[0], init[:half], "forward_", rs)
            yr, bs, _ = self.recurrent(layer, bcls, bcfg, w[used:], ins[0], init[half:], "backward_", rs)
            a, b = y[0], (yr[0][:, ::-1] if rs else yr[0])
            mode = cfg.get("merge_mode", "concat")
            merged = {
                "concat": lambda: [np.concatenate([a, b], -1)],
                "sum": lambda: [a + b],
                "ave": lambda: [(a + b) / 2],
                "mul": lambda: [a * b],
                None: lambda: [a, b],
            }[mode]()
            outs = [(v, y[1]) for v in merged]
            return outs + [(s, None) for s in fs + bs] if fcfg.get("return_state") else outs
        if cls == "Dense":
            y = x @ w[0] + (w[1] if len(w) > 1 else 0)
            return [(activation_fn(cfg.get("activation"), self.km)(y), m)]
        if cls == "Activation":
            return [(activation_fn(cfg.get("activation"), self.km)(x), m)]
        if cls in (
            "Dropout",
            "SpatialDropout1D",
            "SpatialDropout2D",
            "SpatialDropout3D",
            "GaussianNoise",
            "GaussianDropout",
            "AlphaDropout",
            "ActivityRegularization",
        ):
            return [(x, m)]
        if cls == "Embedding":
            ids = x.astype(np.int64)
            mask = (x != 0) if cfg.get("mask_zero") and x.ndim == 2 else None
            return [(w[0][ids], mask)]
        if cls == "Masking":
            keep = np.any(x != float(cfg.get("mask_value", 0.0)), axis=-1)
            return [(np.where(keep[..., None], x, 0.0), keep)]
        if cls == "BatchNormalization":
            names = (["g"] if cfg.get("scale", True) else []) + (["b"] if cfg.get("center", True) else []) + ["m", "v"]
            p = dict(zip(names, w, strict=False))
            y = (x - p["m"]) / np.sqrt(p["v"] + float(cfg.get("epsilon", 1e-3)))
            return [(y * p.get("g", 1.0) + p.get("b", 0.0), m)]
        if cls == "TimeDistributed":
            inner = Layer(layer.name, cfg["layer"]["class_name"], cfg["layer"].get("config") or {}, layer.weights)
            folded = x.reshape(-1, *x.shape[2:])
            y = self.call(inner, [(folded, None)], [], [])[0][0]
            return [(y.reshape(x.shape[0], x.shape[1], *y.shape[1:]), m)]
        if cls == "Flatten":
            return [(x.reshape(x.shape[0], -1), None)]
        if cls == "Reshape":
            return [(x.reshape(x.shape[0], *cfg["target_shape"]), None)]
        if cls == "RepeatVector":
            return [(np.repeat(x[:, None], int(cfg["n"]), axis=1), None)]
        if cls in ("Concatenate", "Add"):
            masks = [v[1] for v in ins]
            mask = None if any(mm is None for mm in masks) else np.logical_or.reduce(masks)
            if cls == "Add":
                return [(sum(v[0] for v in ins), mask)]
            axis = int(cfg.get("axis", -1)) % x.ndim
            return [(np.concatenate([v[0] for v in ins], axis=axis), mask if axis == x.ndim - 1 else None)]
        if layer.kind.startswith("ops."):
            return [(self.op(cls, cfg, ins, args), None)]
        if cls == "_Alias":
            return [ins[0]]
        if cls == "_Outputs":
            return list(ins)
        raise NoReference(cls)


_TAKES_STATES = {"LSTM", "GRU", "SimpleRNN", "RNN", "Bidirectional", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D"}


def _split_states(model: KerasModel, layer: Layer, call: LayerCall) -> tuple[list[TensorRef], list[TensorRef]]:
    """Keras 3 `rnn(x, [h, c])`: states as the second positional argument (`call(sequences,
    initial_state, ...)`) are read as inputs; they are the initial state."""
    args = call.args
    if model.keras_major >= 3 and layer.class_name in _TAKES_STATES and not call.initial_state and len(args) >= 2:
        counts = [len(keras3_tensors(a)) for a in args]
        if counts[1] and not any(counts[2:]) and 0 < counts[0] < len(call.inputs):
            return call.inputs[: counts[0]], call.inputs[counts[0] :]
    return call.inputs, call.initial_state


def _gets_mask(model: KerasModel, call: LayerCall) -> bool:
    """Keras 3 passes the automatic mask only to a call with a single tensor argument
    (keras/src/layers/layer.py `Layer.__call__`); a call given states runs unmasked, its output
    mask is still compute_mask of the first input's mask. Keras 2 masks it (tf_keras RNN.__call__
    puts Keras-tensor states into the inputs list; RNN.call takes the first input's mask)."""
    if model.keras_major < 3:
        return True
    n = sum(1 for a in call.args if keras3_tensors(a)) if call.args else 1
    return n + (1 if call.initial_state else 0) <= 1


def run_reference(
    model: KerasModel, inputs: list[Array], states: dict[str, Array] | None = None
) -> tuple[list[Array], dict[str, Array]]:
    """Model outputs (in the exported graph's order) and final states, computed in float64."""
    runner = _Runner(model, states or {})
    values: dict[TensorRef, Masked] = {}
    for ref, x in zip(model.inputs, inputs, strict=False):
        values[TensorRef(ref.layer)] = (np.asarray(x), None)
    pending = [
        (layer, i) for layer in model.layers if layer.class_name != "InputLayer" for i in range(len(layer.calls))
    ]
    while pending:
        rest = []
        for layer, i in pending:
            call = layer.calls[i]
            refs = [*call.inputs, *call.initial_state, *([call.mask] if call.mask else [])]
            if not all(r in values for r in refs):
                rest.append((layer, i))
                continue
            in_refs, state_refs = _split_states(model, layer, call)
            ins = [values[r] for r in in_refs]
            if call.mask is not None:
                mv = values[call.mask][0]
                ins[0] = (ins[0][0], mv if mv.ndim == 2 else None)
            init = [values[r][0] for r in state_refs]
            runner.call_index = i
            runner.unmasked = call.mask is None and not _gets_mask(model, call)
            for t, v in enumerate(runner.call(layer, ins, init, call.args)):
                values[TensorRef(layer.name, i, t)] = v
        if len(rest) == len(pending):
            raise NoReference("unresolved graph")
        pending = rest
    outs: list[Array] = []
    for ref in model.outputs:
        if ref.tensor == -1:
            n = 0
            while TensorRef(ref.layer, ref.node, n) in values:
                outs.append(values[TensorRef(ref.layer, ref.node, n)][0])
                n += 1
        else:
            outs.append(values[ref][0])
    return outs, runner.states_out
