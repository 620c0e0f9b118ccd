"""The quality benchmark: what the encoder learned and whether its anomaly scores find the events, measured on
held-out windows of synthetic cameras through the exported ONNX files and the serving node's own scoring."""
