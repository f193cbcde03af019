"""Serving a bundle from an inference server: a Triton Inference Server model repository (triton.py)."""
