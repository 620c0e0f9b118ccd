"""StreamSSL serving node: the ONNX encoder on edge hardware. Never imports torch or the trainer."""
