"""Inference: the evaluation segmentation rule, segment embedders (PyTorch / ONNX) and extraction."""
