"""Loaders: turn files into standard ComfyUI objects (MODEL, CLIP, VAE). They know ComfyUI, never the UI."""
