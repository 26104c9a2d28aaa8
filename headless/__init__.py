"""Run shipped workflows without the browser: a real ComfyUI server driven over its HTTP API."""
