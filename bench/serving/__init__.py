"""Serving benchmark parts: the load generator, the servers under test, bare ONNX Runtime, the report."""
