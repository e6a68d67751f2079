#!/usr/bin/env bash
# Build the old-Keras oracle environments under bench/.envs/ (git-ignored).
#
# seqserve reads Keras 0.x/1.x files, Theano-era Keras 2 files and tf.keras SavedModel
# directories without TensorFlow or Theano. To test that, the fixtures in tests/fixtures/old_keras/
# are written by the real Keras of each generation, running here:
#   bench/.envs/keras0.2        Keras 0.2.0 (the last with SimpleDeepRNN and JZS1-3)
#   bench/.envs/keras0.3        Keras 0.3.3
#   bench/.envs/keras1          Keras 1.2.2
#   bench/.envs/keras2_theano   Keras 2.3.1 on the Theano backend
# each with Theano 1.0.5, numpy 1.23.5, scipy 1.10.1, h5py 3.8, PyYAML 6 on Python 3.11, plus the
# import shims of scripts/old_keras/shims/ (loaded by a .pth file; they also set THEANO_FLAGS,
# KERAS_BACKEND=theano and a HOME inside the env). The SavedModel fixtures come from
# bench/.envs/tf (tensorflow-cpu + tf_keras 2.21), made by bench/setup_tf_env.sh if missing.
#
# Run from anywhere:   bash scripts/old_keras/setup_envs.sh [keras0.2 keras0.3 keras1 keras2_theano tf]
# (no arguments: all of them). Then write the fixtures: bash scripts/old_keras/write_fixtures.sh
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
envs="$repo/bench/.envs"
shims="$repo/scripts/old_keras/shims"
python="${PYTHON:-python3.11}"

common=(theano==1.0.5 numpy==1.23.5 scipy==1.10.1 h5py==3.8.0 pyyaml==6.0.1 six==1.16.0)
declare -A keras=(
  [keras0.2]="keras==0.2.0"
  [keras0.3]="keras==0.3.3"
  [keras1]="keras==1.2.2"
  [keras2_theano]="keras==2.3.1 keras-applications==1.0.8 keras-preprocessing==1.1.2"
)

make_env() {
  local name="$1" env_dir="$envs/$1"
  "$python" -m venv "$env_dir"
  # shellcheck disable=SC2086  # the keras entry is a word list on purpose
  "$env_dir/bin/pip" install --quiet "${common[@]}" ${keras[$name]}
  local site
  site="$("$env_dir/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  printf '%s\nimport old_keras_shims\n' "$shims" > "$site/old_keras_shims.pth"
  "$env_dir/bin/python" "$repo/scripts/old_keras/check_env.py"
}

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(keras0.2 keras0.3 keras1 keras2_theano tf)
fi
for name in "${targets[@]}"; do
  if [ "$name" = tf ]; then
    [ -x "$envs/tf/bin/python" ] || bash "$repo/bench/setup_tf_env.sh"
    TF_USE_LEGACY_KERAS=1 "$envs/tf/bin/python" -c \
      'import tensorflow as tf, tf_keras; print("tf", tf.__version__, "tf_keras", tf_keras.__version__)'
  elif [ -n "${keras[$name]:-}" ]; then
    make_env "$name"
  else
    echo "unknown environment: $name (keras0.2 keras0.3 keras1 keras2_theano tf)" >&2
    exit 2
  fi
done
