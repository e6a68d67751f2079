"""The KServe V2 gRPC front end (inference.GRPCInferenceService): thin grpc.aio servicers over the data plane."""
