"""The gRPC status of a seqserve error: the code its class names in the one error table (`seqserve.errors`)."""

from __future__ import annotations

import grpc

from seqserve.errors import SeqserveError


def grpc_code(error: SeqserveError) -> grpc.StatusCode:
    return grpc.StatusCode[error.grpc_status]
