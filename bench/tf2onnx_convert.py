"""Converts every `<dir>/*/model.keras` with tf2onnx, writing `tf2onnx.onnx` beside it.

Runs in the separate TensorFlow environment (bench/setup_tf_env.sh), never in seqserve's: this is
the route a Keras user has today (Keras 3 on TensorFlow, `model.export(format="onnx")`, which calls
tf2onnx). Failures are written to `tf2onnx.error` so the benchmark can report them.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402


def convert(case: Path) -> None:
    model = keras.saving.load_model(case / "model.keras", compile=False)
    model(np.load(case / "x.npy")[:1])  # Keras' ONNX export refuses a model that has never been called
    model.export(str(case / "tf2onnx.onnx"), format="onnx", verbose=False)


def main(root: Path) -> int:
    for case in sorted(p for p in root.iterdir() if (p / "model.keras").is_file()):
        print(f"tf2onnx: {case.name}", flush=True)
        try:
            convert(case)
        except Exception:
            (case / "tf2onnx.error").write_text(traceback.format_exc())
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
