"""Saving pictures: PNG text chunks (ComfyUI's prompt/workflow, A1111 `parameters`), never overwriting."""
