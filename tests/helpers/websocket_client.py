"""A small client for seqserve's WebSocket streaming, for the tests: V2 requests as text or binary messages."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect

PREFIX = struct.Struct("<I")  # the JSON header's length in front of a binary message


def open_stream(url: str, **kwargs: Any) -> connect:
    """`async with open_stream(...) as ws`; no proxy from the environment, messages of any size."""
    return connect(url, proxy=None, max_size=None, **kwargs)


def step(x: np.ndarray, sequence_id: int | str | None = None, request_id: str | None = None, **flags: Any) -> dict:
    body: dict[str, Any] = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}],
    }
    parameters = dict(flags)
    if sequence_id is not None:
        parameters["sequence_id"] = sequence_id
    if parameters:
        body["parameters"] = parameters
    if request_id is not None:
        body["id"] = request_id
    return body


def binary_step(x: np.ndarray, sequence_id: int | str, request_id: str | None = None, **flags: Any) -> bytes:
    """The same step as a binary message: input and outputs as raw little-endian bytes."""
    raw = np.ascontiguousarray(x, dtype="<f4").tobytes()
    header: dict[str, Any] = {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": list(x.shape), "parameters": {"binary_data_size": len(raw)}}
        ],
        "parameters": {"sequence_id": sequence_id, "binary_data_output": True, **flags},
    }
    if request_id is not None:
        header["id"] = request_id
    head = json.dumps(header).encode()
    return PREFIX.pack(len(head)) + head + raw


def decode_answer(message: str | bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The JSON document of an answer and its outputs as arrays, text or binary."""
    if isinstance(message, str):
        document = json.loads(message)
        outputs = {
            o["name"]: np.asarray(o["data"], dtype=np.float32).reshape(o["shape"]) for o in document.get("outputs", [])
        }
        return document, outputs
    (length,) = PREFIX.unpack_from(message)
    document = json.loads(message[PREFIX.size : PREFIX.size + length])
    offset = PREFIX.size + length
    outputs = {}
    for o in document["outputs"]:
        size = o["parameters"]["binary_data_size"]
        outputs[o["name"]] = np.frombuffer(message[offset : offset + size], dtype="<f4").reshape(o["shape"])
        offset += size
    assert offset == len(message)
    return document, outputs


async def exchange(ws: ClientConnection, body: dict | bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    await ws.send(body if isinstance(body, bytes) else json.dumps(body))
    return decode_answer(await ws.recv())
