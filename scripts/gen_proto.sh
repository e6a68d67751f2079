#!/usr/bin/env bash
# Regenerates service/seqserve/grpc/generated/ from proto/grpc_service.proto (KServe V2 + Triton's
# ModelStreamInfer) and proto/session_service.proto (our session API, which imports the first for
# its tensor messages) with grpcio-tools.
#
# Rewrites follow protoc, each checked so that a new protoc output format fails here loudly
# instead of producing code that breaks at import time:
#  1. Imports of generated modules (`import grpc_service_pb2` in the stubs, in session_service_pb2
#     and its .pyi) become package-relative (protoc writes them as top-level imports, which only
#     work with the generated directory on sys.path).
#  2. The messages are registered in a private descriptor pool instead of protobuf's process-wide
#     default one. tritonclient.grpc registers the very same full names (inference.ModelInferRequest,
#     ...) from its own, larger grpc_service.proto in the default pool, and protobuf refuses a second
#     definition of a name ("duplicate file name" / "duplicate symbol"), so with the default pool no
#     process could import both seqserve.grpc and tritonclient.grpc: not a test run, not a benchmark
#     driving an in-process server, not a user's notebook. Only the service and method names and
#     the field numbers travel on the wire; descriptor full names never do, so the private pool
#     changes nothing for clients. Reflection is given that pool explicitly (seqserve/grpc/server.py).
#     session_service.proto refers to inference.* messages, so it must be added to the very pool
#     that holds grpc_service.proto: its module adds itself to grpc_service_pb2.DESCRIPTOR.pool.
#
# Usage: scripts/gen_proto.sh   (from anywhere; uses the repository's .venv unless PYTHON is set)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
out="$root/service/seqserve/grpc/generated"

rm -f "$out"/grpc_service_pb2*.py "$out"/grpc_service_pb2*.pyi "$out"/session_service_pb2*.py "$out"/session_service_pb2*.pyi
mkdir -p "$out"
"$python" -m grpc_tools.protoc -I "$root/proto" \
    --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
    "$root/proto/grpc_service.proto" "$root/proto/session_service.proto"

rewrite() {  # rewrite FILE FROM TO: replaces FROM (a fixed string) by TO, failing when FROM is absent
    "$python" - "$@" <<'PY'
import pathlib, sys
path, old, new = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
text = path.read_text()
if old not in text:
    sys.exit(f"gen_proto.sh: {old!r} not found in {path.name}; protoc's output changed, update the script")
path.write_text(text.replace(old, new))
PY
}

rewrite "$out/grpc_service_pb2_grpc.py" "import grpc_service_pb2 as" "from . import grpc_service_pb2 as"
rewrite "$out/grpc_service_pb2.py" "_descriptor_pool.Default().AddSerializedFile(" \
    "_descriptor_pool.DescriptorPool().AddSerializedFile("
rewrite "$out/session_service_pb2_grpc.py" "import session_service_pb2 as" "from . import session_service_pb2 as"
rewrite "$out/session_service_pb2.py" "import grpc_service_pb2 as" "from . import grpc_service_pb2 as"
rewrite "$out/session_service_pb2.pyi" "import grpc_service_pb2 as" "from . import grpc_service_pb2 as"
rewrite "$out/session_service_pb2.py" "_descriptor_pool.Default().AddSerializedFile(" \
    "grpc__service__pb2.DESCRIPTOR.pool.AddSerializedFile("

cat > "$out/__init__.py" <<'PY'
"""Code generated from proto/grpc_service.proto and proto/session_service.proto by scripts/gen_proto.sh: do not edit, regenerate."""
PY

echo "generated in ${out#"$root"/}: $(cd "$out" && echo grpc_service_pb2* session_service_pb2*)"
