"""Writes the TorchServe baseline's weights: a state dict of `lstm_model.StackedLSTM` (torch.save).

With `--keras FILE` the weights are copied from the benchmark's saved Keras model (needs keras, i.e.
seqserve's own environment, where keras runs on torch 2.13), and the torch model is checked against
Keras `predict` over a few timesteps, stepping one timestep at a time with the states fed back as
the handler does. Without it, the weights are random, seeded (`--seed`), shaped by `--features`,
`--units`, `--layers`: that runs in the TorchServe environment alone.

    .venv/bin/python bench/baselines/torchserve/build_model.py --keras lstm.keras --out lstm.pt
    bench/.envs/torchserve/bin/python bench/baselines/torchserve/build_model.py --out lstm.pt --seed 0
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lstm_model import StackedLSTM  # noqa: E402


def from_keras(keras_file: Path, check_steps: int = 5) -> tuple[StackedLSTM, float]:
    """The Keras model's LSTM stack as a StackedLSTM, and its max abs difference to Keras `predict`."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    model = keras.saving.load_model(keras_file)
    lstms = [layer for layer in model.layers if isinstance(layer, keras.layers.LSTM)]
    if not lstms or any(not layer.return_sequences for layer in lstms):
        raise ValueError(f"{keras_file}: expected stacked LSTMs with return_sequences=True")
    units = {layer.units for layer in lstms}
    if len(units) != 1:
        raise ValueError(f"{keras_file}: nn.LSTM stacks layers of one width, got {sorted(units)}")
    torch_model = StackedLSTM(int(model.inputs[0].shape[-1]), units.pop(), len(lstms))
    torch_model.copy_keras_weights([w for layer in lstms for w in layer.get_weights()])
    torch_model.eval()

    x = np.random.default_rng(1).standard_normal((2, check_steps, torch_model.features), dtype=np.float32)
    expected = np.asarray(model.predict(x, verbose=0))
    h = c = torch.zeros(torch_model.layers, 2, torch_model.units)
    steps = []
    with torch.inference_mode():
        for t in range(check_steps):
            y, h, c = torch_model(torch.from_numpy(x[:, t : t + 1]), h, c)
            steps.append(y.numpy())
    return torch_model, float(np.abs(np.concatenate(steps, axis=1) - expected).max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the state dict to write (.pt)")
    parser.add_argument("--keras", type=Path, default=None, help="copy the weights from this .keras file")
    parser.add_argument("--seed", type=int, default=0, help="random weights' seed (without --keras)")
    parser.add_argument("--features", type=int, default=256)
    parser.add_argument("--units", type=int, default=512)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max abs difference to Keras allowed")
    args = parser.parse_args(argv)
    if args.keras is not None:
        model, difference = from_keras(args.keras)
        print(f"weights copied from {args.keras}; max abs difference to Keras predict: {difference:.2e}")
        if not difference <= args.tolerance:
            print(f"the torch model does not match Keras (tolerance {args.tolerance:g})", file=sys.stderr)
            return 1
    else:
        torch.manual_seed(args.seed)
        model = StackedLSTM(args.features, args.units, args.layers)
        print(f"random weights, seed {args.seed}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out)
    print(f"wrote {args.out}: StackedLSTM {model.features} -> {model.units} x{model.layers}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
