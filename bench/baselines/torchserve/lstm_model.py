"""The benchmark's LSTM stack in PyTorch: Input(F) -> LSTM(U) -> LSTM(U), batch-first, states explicit.

One `torch.nn.LSTM` with `num_layers=2` is the same computation as two stacked Keras LSTMs
(return_sequences=True): Keras' gate order (input, forget, cell, output) is PyTorch's, Keras' kernel is
PyTorch's `weight_ih` transposed, and Keras has one bias where PyTorch adds two (`bias_hh` is left 0).
Shared by `build_model.py` (writes the weights) and `lstm_handler.py` (serves them).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class StackedLSTM(nn.Module):
    """`layers` LSTMs of `units` over `features` inputs; forward(x [B, T, F], h, c [layers, B, U])."""

    def __init__(self, features: int = 256, units: int = 512, layers: int = 2) -> None:
        super().__init__()
        self.features, self.units, self.layers = features, units, layers
        self.lstm = nn.LSTM(features, units, num_layers=layers, batch_first=True)

    def forward(
        self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y, (h_out, c_out) = self.lstm(x, (h, c))
        return y, h_out, c_out

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> StackedLSTM:
        """A model shaped by the saved weights themselves (features, units and layers read from them)."""
        layers = sum(1 for key in state if key.startswith("lstm.weight_ih_l"))
        model = cls(int(state["lstm.weight_ih_l0"].shape[1]), int(state["lstm.weight_hh_l0"].shape[1]), layers)
        model.load_state_dict(state)
        return model.eval()

    def copy_keras_weights(self, weights: list[Any]) -> None:
        """Weights of Keras LSTMs in layer order, as `layer.get_weights()` gives them: kernel [F, 4U],
        recurrent kernel [U, 4U], bias [4U] per layer."""
        if len(weights) != 3 * self.layers:
            raise ValueError(f"expected 3 arrays per layer (kernel, recurrent, bias), got {len(weights)}")
        with torch.no_grad():
            for layer in range(self.layers):
                kernel, recurrent, bias = (torch.as_tensor(w) for w in weights[3 * layer : 3 * layer + 3])
                getattr(self.lstm, f"weight_ih_l{layer}").copy_(kernel.T)
                getattr(self.lstm, f"weight_hh_l{layer}").copy_(recurrent.T)
                getattr(self.lstm, f"bias_ih_l{layer}").copy_(bias)
                getattr(self.lstm, f"bias_hh_l{layer}").zero_()
