"""Open Inference Protocol messages for gRPC (generated from grpc_predict_v2.proto)."""
