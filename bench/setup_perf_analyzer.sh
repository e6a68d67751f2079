#!/usr/bin/env bash
# Set up Triton's perf_analyzer at bench/.envs/perf_analyzer (git-ignored), with a wrapper that runs it:
#   bench/.envs/perf_analyzer/perf_analyzer -m sentiment -u 127.0.0.1:8000 ...
#
# seqserve never needs perf_analyzer; tests/bench/test_perf_analyzer.py and
# bench/perf_analyzer_vs_load.py use it when it is here (the test skips without it).
# Where it comes from: the tritonclient 2.41 wheel ships the perf_analyzer binary in its bin/. The
# binary is linked against Debian's libb64 (libb64-0d) and the CUDA runtime (libcudart.so.12, from
# PyPI's nvidia-cuda-runtime-cu12); it only needs them to start, it uses no GPU. Newer tritonclient
# wheels' perf_analyzer needs a newer glibc than Debian 12's 2.36, so the version is pinned.
# Run it from anywhere: bash bench/setup_perf_analyzer.sh   (running it again only checks the set)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
env_dir="$repo/bench/.envs/perf_analyzer"
python="${PYTHON:-python3.11}"

step() { echo "[setup_perf_analyzer] $*"; }

if ! /sbin/ldconfig -p | grep -q 'libb64\.so\.0d'; then
    if [[ $(id -u) -ne 0 ]]; then
        step "libb64-0d is missing and this is not root: run 'apt-get install libb64-0d' and try again" >&2
        exit 1
    fi
    step "installing Debian's libb64-0d"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libb64-0d >/dev/null
fi

if [[ ! -x "$env_dir/bin/python" ]]; then
    step "creating $env_dir with $("$python" --version)"
    "$python" -m venv "$env_dir"
else
    step "$env_dir exists; re-checking its packages"
fi
step "installing tritonclient==2.41.* (perf_analyzer) and nvidia-cuda-runtime-cu12"
"$env_dir/bin/pip" install --quiet "tritonclient==2.41.*" nvidia-cuda-runtime-cu12

# The wrapper finds the CUDA runtime inside its own environment, so the folder can be rebuilt in place.
wrapper="$env_dir/perf_analyzer"
cat >"$wrapper" <<'EOF'
#!/usr/bin/env bash
# Runs tritonclient 2.41's perf_analyzer with the CUDA runtime library of this environment on the path.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cudart=("$here"/lib/python3*/site-packages/nvidia/cuda_runtime/lib)
export LD_LIBRARY_PATH="${cudart[0]}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$here/bin/perf_analyzer" "$@"
EOF
chmod +x "$wrapper"

# perf_analyzer has no --help of its own (it prints its usage and exits 99); --version proves it starts.
version="$("$wrapper" --version 2>&1)"
[[ "$version" == "Perf Analyzer Version 2.41"* ]] || { step "unexpected: $version" >&2; exit 1; }
step "$version: run it as $wrapper"
