"""Optional fused GPU kernels (Triton). Each has a torch reference in quant/dequant_*.py and is bit-exact to it."""
