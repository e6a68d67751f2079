"""Code generated from proto/grpc_service.proto and proto/session_service.proto by scripts/gen_proto.sh: do not edit, regenerate."""
