"""Published model files (the catalog) and the `download` command that fetches them into ComfyUI's folders."""
