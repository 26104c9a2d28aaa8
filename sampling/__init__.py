"""Sampling helpers built on ComfyUI's own samplers."""
