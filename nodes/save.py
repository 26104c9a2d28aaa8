"""ZImageSaveImage: SaveImage plus the A1111 `parameters` chunk galleries read; never overwrites."""
from __future__ import annotations

from pathlib import Path

from ..saving.a1111 import parameters_from_prompt
from ..saving.png import png_info, short_model_hash, to_pil, write_png_exclusive
from .common import find_model

MODEL_FOLDERS = ("diffusion_models", "unet", "checkpoints")


def _model_hash(name: str) -> str | None:
    path = find_model(name, *MODEL_FOLDERS)
    return short_model_hash(path) if path else None


class ZImageSaveImage:
    """Save PNGs with ComfyUI's workflow (drop the file back into ComfyUI) and A1111-style parameters."""

    DESCRIPTION = ("Saves images to the output folder with the workflow embedded, plus the 'parameters' text "
                   "(prompt, steps, sampler, cfg, seed, size, model and hash) that Civitai and galleries read. "
                   "Existing files are never overwritten.")
    CATEGORY = "Z-Image Turbo/image"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images to save."}),
                "filename_prefix": ("STRING", {"default": "z_image_turbo",
                                               "tooltip": "File name prefix; may contain sub-folders and %date:yyyy-MM-dd%."}),
                "parameters": ("BOOLEAN", {"default": True, "tooltip": "Also write the A1111 'parameters' text."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def save(self, images, filename_prefix="z_image_turbo", parameters=True, prompt=None, extra_pnginfo=None):
        import folder_paths
        from comfy.cli_args import args

        height, width = images[0].shape[0], images[0].shape[1]
        folder, stem, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory(), width, height)
        per_image = parameters_from_prompt(prompt, width, height, _model_hash) if (parameters and prompt) else []
        results = []
        for i, image in enumerate(images):
            if args.disable_metadata:
                info = png_info(None, None, None)
            else:
                text = per_image[min(i, len(per_image) - 1)].to_text() if per_image else None
                info = png_info(prompt, extra_pnginfo, text)
            name, counter = write_png_exclusive(Path(folder), stem.replace("%batch_num%", str(i)), counter,
                                                to_pil(image), info)
            results.append({"filename": name, "subfolder": subfolder, "type": "output"})
            counter += 1
        return {"ui": {"images": results}}


NODE_CLASS_MAPPINGS = {"ZImageSaveImage": ZImageSaveImage}
NODE_DISPLAY_NAME_MAPPINGS = {"ZImageSaveImage": "Z-Image Save Image (with parameters)"}
