"""seqserve: serve Keras recurrent models with per-client state over KServe V2 REST and gRPC."""

__version__ = "0.1.0"
