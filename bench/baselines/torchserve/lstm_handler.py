"""TorchServe custom handler: one batched LSTM step per batch, states kept per sequence id.

With `sequenceBatching: true` TorchServe's frontend puts at most one request of each sequence into a
batch, and gives every request its sequence id (`context.get_sequence_id(i)`). This handler keeps the
LSTM's (h, c) of each sequence between requests, stacks the states of the batch's sequences, runs
one `nn.LSTM` call over the whole batch (one timestep each) and scatters the new states back.

Request: the input named `data` (gRPC `input` map) or the body (REST) is one timestep x, float32
little-endian raw bytes, `features` values ([1, 1, F]). Answer: y of that step, [1, 1, U] float32 raw.
A request that also carries an input (gRPC) or query parameter (REST) named `sequence_start` starts
its sequence from zeros; one named `sequence_end` drops the state after answering. A sequence id
seen for the first time starts from zeros too. States idle longer than `state_idle_seconds` and the
least recently used past `max_sequences` are dropped as well. (TorchServe 0.12's gRPC frontend sets
its own `ts_request_sequence_end` header on every request, so that header is not read here.)

Settings, from the `handler:` section of model-config.yaml: `intra_op_threads` (torch threads),
`mkldnn` (whether torch may run the LSTM through oneDNN, its default), `max_sequences`,
`state_idle_seconds`. Imports nothing from TorchServe (the context is duck-typed),
so the tests drive it with a stand-in context.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from typing import Any

import torch
from lstm_model import StackedLSTM

logger = logging.getLogger(__name__)


class StatefulLSTMHandler:
    """The only class in this module: TorchServe instantiates it and calls initialize, then handle."""

    def __init__(self) -> None:
        self.model: StackedLSTM | None = None
        # sequence id -> (h [layers, U], c [layers, U], last used, monotonic seconds); oldest use first
        self.states: OrderedDict[str, tuple[torch.Tensor, torch.Tensor, float]] = OrderedDict()
        self.max_sequences = 4096
        self.idle_seconds = 60.0
        self.zeros = torch.zeros(0)  # the state of a new sequence, [layers, U]; shaped in initialize
        self.x_bytes = 0
        self.initialized = False

    def initialize(self, context: Any) -> None:
        settings = (getattr(context, "model_yaml_config", None) or {}).get("handler") or {}
        torch.set_num_threads(int(settings.get("intra_op_threads", 1)))
        torch.backends.mkldnn.enabled = bool(settings.get("mkldnn", True))
        self.max_sequences = int(settings.get("max_sequences", self.max_sequences))
        self.idle_seconds = float(settings.get("state_idle_seconds", self.idle_seconds))
        model_dir = context.system_properties["model_dir"]
        weights = os.path.join(model_dir, context.manifest["model"]["serializedFile"])
        self.model = StackedLSTM.from_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        layers, units = self.model.layers, self.model.units
        self.zeros = torch.zeros(layers, units)
        self.x_bytes = 4 * self.model.features
        logger.info("StackedLSTM %d -> %d x%d, %d torch threads, mkldnn %s, states kept for %d sequences / %.0f s idle",
                    self.model.features, units, layers, torch.get_num_threads(), torch.backends.mkldnn.enabled,
                    self.max_sequences, self.idle_seconds)  # fmt: skip
        self.initialized = True

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[bytes]:
        assert self.model is not None, "initialize first"
        # Sequence batching puts one request per sequence into a batch, so no id repeats here.
        ids = [str(context.get_sequence_id(i)) for i in range(len(data))]
        bodies, hs, cs, good = [], [], [], []
        answers: list[bytes] = [b""] * len(data)
        for i, (row, sequence) in enumerate(zip(data, ids, strict=True)):
            body = row.get("data") or row.get("body") or b""
            if not isinstance(body, (bytes, bytearray)) or len(body) != self.x_bytes:
                problem = f"expected x as {self.x_bytes} bytes of float32, got {len(body)}"
                context.set_response_status(400, problem, i)
                answers[i] = problem.encode()
                continue
            state = None if "sequence_start" in row else self.states.get(sequence)
            h, c = (self.zeros, self.zeros) if state is None else state[:2]
            bodies.append(body)
            hs.append(h)
            cs.append(c)
            good.append(i)
        if good:
            # A bytearray is writable: torch takes it without a copy or a warning.
            x = torch.frombuffer(bytearray().join(bodies), dtype=torch.float32).reshape(len(good), 1, -1)
            with torch.inference_mode():
                y, h_new, c_new = self.model(x, torch.stack(hs, 1), torch.stack(cs, 1))
            now = time.monotonic()
            out = y.numpy()
            for j, i in enumerate(good):
                answers[i] = out[j].tobytes()
                sequence = ids[i]
                if "sequence_end" in data[i]:
                    self.states.pop(sequence, None)
                    continue
                # Views into this batch's state tensors: no copy; the next batch's stack copies them.
                self.states[sequence] = (h_new[:, j], c_new[:, j], now)
                self.states.move_to_end(sequence)
            self._evict(now)
        return answers

    def _evict(self, now: float) -> None:
        """Drops the least recently used states past max_sequences and those idle for too long."""
        while self.states:
            sequence, (_, _, used) = next(iter(self.states.items()))
            if len(self.states) <= self.max_sequences and now - used <= self.idle_seconds:
                break
            del self.states[sequence]
