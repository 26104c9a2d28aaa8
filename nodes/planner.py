"""ZImageVRAMPlanner: which model files and tier workflow fit the card, before anything is loaded."""
from __future__ import annotations

from ..planner.estimate import MODEL_CFG, GiB, choose
from ..planner.files import ROLE_FOLDERS, inspect_file
from ..loaders.controlnet import WEIGHT_DTYPES as PATCH_WEIGHT_DTYPES
from .common import model_files, model_path
from .controlnet import FOLDERS as PATCH_FOLDERS


class ZImageVRAMPlanner:
    """Reads the headers of the model files present and estimates the peak VRAM of encode, sample and decode."""

    DESCRIPTION = ("Plans a run before loading anything: for the card's VRAM, the resolution and the batch, "
                   "it reports which text encoder / DiT / VAE files present fit, the peak VRAM of each stage, "
                   "whether ComfyUI will stream weights (offload) and which tier workflow to use.")
    CATEGORY = "Z-Image Turbo/utils"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("report",)
    OUTPUT_TOOLTIPS = ("The plan as text.",)
    OUTPUT_NODE = True
    FUNCTION = "plan"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vram_gb": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1024.0, "step": 0.5,
                                  "tooltip": "The card's VRAM in GiB; 0 = detect the card ComfyUI runs on."}),
            "width": ("INT", {"default": 1024, "min": 256, "max": 4096, "step": 16, "tooltip": "Picture width."}),
            "height": ("INT", {"default": 1024, "min": 256, "max": 4096, "step": 16, "tooltip": "Picture height."}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Pictures per run."}),
        }, "optional": {
            "control_patch": (["none", *model_files(*PATCH_FOLDERS)], {
                "default": "none", "tooltip": "A Fun ControlNet patch from models/model_patches to sample with: "
                                              "the plan counts it beside the DiT and names the ControlNet workflow."}),
            "control_patch_dtype": (list(PATCH_WEIGHT_DTYPES), {
                "default": "default", "tooltip": "The ControlNet loader's weight_dtype for that patch."}),
            "model": (list(MODEL_CFG), {
                "default": "turbo", "tooltip": "turbo: cfg 1, one model input per step. base (Z-Image Base): cfg 4, "
                                               "the negative runs every step too (ComfyUI batches both when "
                                               "they fit: twice the activations); names the Base workflows."}),
        }}

    def plan(self, vram_gb, width, height, batch_size, control_patch="none", control_patch_dtype="default",
             model="turbo"):
        from ..planner.host import detected_vram, live_host_profile
        vram = int(vram_gb * GiB) if vram_gb > 0 else detected_vram()
        if vram is None:
            report = "No GPU detected: enter the card's VRAM in vram_gb."
            return {"ui": {"text": [report]}, "result": (report,)}
        patch = None if control_patch == "none" else inspect_file(model_path(control_patch, *PATCH_FOLDERS))
        files = []
        for folders in ROLE_FOLDERS.values():
            for name in model_files(*folders):
                mf = inspect_file(model_path(name, *folders))
                if mf is not None and all(f.path != mf.path for f in files):
                    files.append(mf)
        report = choose(files, vram, width, height, batch_size, live_host_profile(), control_patch=patch,
                        patch_dtype=control_patch_dtype, cfg=MODEL_CFG[model], model=model).report()
        return {"ui": {"text": [report]}, "result": (report,)}


NODE_CLASS_MAPPINGS = {"ZImageVRAMPlanner": ZImageVRAMPlanner}
NODE_DISPLAY_NAME_MAPPINGS = {"ZImageVRAMPlanner": "Z-Image VRAM Planner"}
