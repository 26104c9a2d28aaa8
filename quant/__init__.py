"""GGUF reading, dequantization, quantization and quantized ops (no ComfyUI imports outside ops.py)."""
