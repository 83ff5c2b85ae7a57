"""Models as graphs: a sentence-transformers model's forward exported to ONNX, run by ONNX Runtime or OpenVINO,
optionally as static int8 calibrated on the caller's own inputs (`runtime`), and the forward recorded, traced,
checked and replaced by a graph (`forward`). Used by the teacher's int8 precision and by `make export`."""
