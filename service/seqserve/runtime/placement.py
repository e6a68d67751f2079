"""Where ONNX Runtime really runs a model's nodes, read from the profile of one run.

ONNX Runtime places each node on the first execution provider that takes it, and moves nodes the
CUDA EP refuses to the CPU without an error (an LSTM with hard_sigmoid, a GRU with
linear_before_reset=0: gpu/NOTES.md). So placement is measured, not assumed: the first run of a
model (its warm-up) is profiled, and each executed kernel's provider is read from the profile.
Nodes inside Scan, Loop and If bodies are included. Profiling ends after that run, at no later cost.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# Ops that carry a recurrent model's arithmetic: on a GPU target they must not run on the CPU.
# (Shape computations on the CPU are normal: the CUDA EP leaves them there on purpose.)
COMPUTE_OPS = frozenset({"LSTM", "GRU", "RNN", "Scan", "Loop", "MatMul", "Gemm", "FusedGemm", "Conv", "FusedConv"})


@dataclass(frozen=True)
class Placement:
    """node name -> (op type, execution provider), for every node the profiled run executed."""

    nodes: dict[str, tuple[str, str]]

    @classmethod
    def from_profile(cls, path: str | Path) -> Placement:
        with open(path) as profile:
            events = json.load(profile)
        nodes = {}
        for event in events:
            args = event.get("args") or {}
            if event.get("cat") == "Node" and "provider" in args:
                node = str(event.get("name", "")).removesuffix("_kernel_time")
                nodes[node] = (str(args.get("op_name", "?")), str(args["provider"]))
        return cls(nodes)

    @classmethod
    def read_and_remove(cls, path: str | Path) -> Placement:
        try:
            return cls.from_profile(path)
        finally:
            os.remove(path)

    def counts(self) -> Counter[tuple[str, str]]:
        """(provider, op type) -> how many nodes."""
        return Counter((provider, op) for op, provider in self.nodes.values())

    def compute_on(self, provider: str) -> list[str]:
        """The compute ops (`COMPUTE_OPS`) placed on `provider`, one entry per node."""
        return sorted(op for op, where in self.nodes.values() if where == provider and op in COMPUTE_OPS)

    def summary(self) -> str:
        per_provider = Counter(provider for _, provider in self.nodes.values())
        return ", ".join(f"{n} on {provider}" for provider, n in sorted(per_provider.items())) or "no nodes ran"
