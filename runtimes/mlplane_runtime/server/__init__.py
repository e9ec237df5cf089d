"""The model server runtime (`mlplane-serve`): ONNX Runtime behind KServe V1 and V2 REST."""
