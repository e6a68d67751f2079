#!/usr/bin/env bash
# Write every fixture of tests/fixtures/old_keras/ with the real Keras of each generation.
#
# Needs the envs of scripts/old_keras/setup_envs.sh. Takes ~20 minutes on one core, most of it
# Keras 0.x compiling each model's training function in Theano's pure-Python mode.
# Run from anywhere: bash scripts/old_keras/write_fixtures.sh [keras0.2 keras0.3 keras1 keras2_theano tf]
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
envs="$repo/bench/.envs"
scripts="$repo/scripts/old_keras"

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(keras0.2 keras0.3 keras1 keras2_theano tf)
fi
for name in "${targets[@]}"; do
  case "$name" in
    keras0.2 | keras0.3) "$envs/$name/bin/python" "$scripts/write_fixtures_keras0.py" ;;
    keras1) "$envs/keras1/bin/python" "$scripts/write_fixtures_keras1.py" ;;
    keras2_theano) "$envs/keras2_theano/bin/python" "$scripts/write_fixtures_keras2_theano.py" ;;
    tf) TF_USE_LEGACY_KERAS=1 "$envs/tf/bin/python" "$scripts/write_fixtures_tf_savedmodel.py" ;;
    *) echo "unknown generation: $name" >&2; exit 2 ;;
  esac
done
