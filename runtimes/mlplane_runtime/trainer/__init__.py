"""The trainer runtime (`mlplane-train`): fit, evaluate, convert to ONNX, profile, publish."""
