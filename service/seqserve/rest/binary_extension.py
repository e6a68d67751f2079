"""Names and layout of Triton's binary tensor data extension, shared by request decoding and response encoding.

A body is a JSON object optionally followed by raw tensor bytes, in the order of the tensors in the JSON;
the `Inference-Header-Content-Length` header gives the JSON's length. Tensors are little-endian, row-major,
unpadded; a BYTES element is a 4-byte little-endian length followed by its bytes (`seqserve.raw_tensors`,
shared with gRPC's raw contents).
"""

from __future__ import annotations

HEADER_LENGTH = "Inference-Header-Content-Length"
# In an input (request) or an output (response): this tensor's data is binary, this many bytes of it.
BINARY_DATA_SIZE = "binary_data_size"
# In a requested output: return it as binary. At request level: the default for every output.
BINARY_DATA = "binary_data"
BINARY_DATA_OUTPUT = "binary_data_output"
JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"
