#!/usr/bin/env bash
# Build the TensorFlow side environment at bench/.envs/tf (git-ignored).
#
# seqserve itself never needs TensorFlow. This environment exists for two things only:
#   - writing the Keras 2 (tf.keras 2.21 / tf_keras) .h5 fixtures in tests/fixtures/keras2/,
#   - the tf2onnx comparison benchmarks in bench/.
# Run it from anywhere: bash bench/setup_tf_env.sh
# Use it with TF_USE_LEGACY_KERAS=1 so that tf.keras means tf_keras (Keras 2), e.g.
#   TF_USE_LEGACY_KERAS=1 bench/.envs/tf/bin/python tests/fixtures/keras2/make_fixtures.py
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
env_dir="$repo/bench/.envs/tf"
python="${PYTHON:-python3.11}"

"$python" -m venv "$env_dir"
pip=("$env_dir/bin/pip" install --quiet)

# tf2onnx 1.17's requirements resolve together with TensorFlow 2.21 (`pip check` is clean), so one
# install covers all; the import below proves that the set works.
"${pip[@]}" tensorflow-cpu==2.21.0 tf_keras==2.21.0 tf2onnx==1.17.0 onnxruntime onnx
"$env_dir/bin/pip" check
"$env_dir/bin/python" - <<'EOF'
import os
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import onnx, onnxruntime, tensorflow as tf, tf2onnx, tf_keras
print("tensorflow", tf.__version__, "tf_keras", tf_keras.__version__, "tf2onnx", tf2onnx.__version__,
      "onnx", onnx.__version__, "onnxruntime", onnxruntime.__version__)
EOF
