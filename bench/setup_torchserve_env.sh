#!/usr/bin/env bash
# Build the TorchServe side environment at bench/.envs/torchserve (git-ignored).
#
# seqserve never needs TorchServe. This environment exists for one thing: configuration `torchserve`
# of bench/serving_load.py, TorchServe 0.12 stateful inference (sequence batching) serving the same
# 2-layer LSTM in PyTorch (bench/baselines/torchserve/). TorchServe's frontend is Java: it needs a
# Java 17 runtime on PATH (or JAVA_HOME).
# Run it from anywhere: bash bench/setup_torchserve_env.sh   (running it again only checks the set)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
env_dir="$repo/bench/.envs/torchserve"
python="${PYTHON:-python3.11}"

step() { echo "[setup_torchserve_env] $*"; }

if [[ ! -x "$env_dir/bin/python" ]]; then
    step "creating $env_dir with $("$python" --version)"
    "$python" -m venv "$env_dir"
else
    step "$env_dir exists; re-checking its packages"
fi
pip=("$env_dir/bin/pip" install --quiet)

# torch first and pinned: the CPU build 2.13.0 lies on this machine's disk (pip's find-links), and
# nothing installed after it may replace it with a CUDA build from the index.
step "installing torch==2.13.0 (CPU)"
"${pip[@]}" torch==2.13.0
step "installing torchserve 0.12.0, torch-model-archiver 0.12.0, numpy, pyyaml"
"${pip[@]}" torch==2.13.0 torchserve==0.12.0 torch-model-archiver==0.12.0 numpy pyyaml
"$env_dir/bin/pip" check

if ! command -v "${JAVA_HOME:+$JAVA_HOME/bin/}java" >/dev/null; then
    step "WARNING: no java found; TorchServe's frontend needs Java 17 (apt-get install openjdk-17-jre-headless)"
fi
"$env_dir/bin/python" - <<'EOF'
from importlib import metadata

import torch

assert torch.__version__.startswith("2.13.0"), torch.__version__
assert torch.version.cuda is None, f"a CUDA build of torch was installed ({torch.version.cuda})"
print("[setup_torchserve_env] torch", torch.__version__, "torchserve", metadata.version("torchserve"),
      "torch-model-archiver", metadata.version("torch-model-archiver"))
EOF
step "done"
