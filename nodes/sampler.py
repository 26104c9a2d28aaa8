"""ZImageTurboSampler: 8-step Z-Image-Turbo sampling with sensible defaults."""
from __future__ import annotations

import math

from ..sampling.presets import CUSTOM, preset_names, resolve_preset
from ..sampling.schedules import schedule_names
from ..sampling.turbo import checked_empty_latent, image_seeds, turbo_sample
from .common import CATEGORY_SAMPLING

MAX_RESOLUTION = 16384


class ZImageTurboSampler:
    """Sample Z-Image-Turbo: 8 steps, cfg 1 (no negative pass), flow shift 3, euler/simple."""

    DESCRIPTION = ("Samples a Z-Image latent with ComfyUI's own samplers. Without a latent input it starts "
                   "from an empty width×height latent. At cfg 1 the negative prompt is never run. A size "
                   "whose activations cannot fit the free memory (VRAM; RAM on the CPU) is refused before "
                   "anything is allocated, naming the largest size that fits.")
    CATEGORY = CATEGORY_SAMPLING
    RETURN_TYPES = ("LATENT", "STRING")
    RETURN_NAMES = ("LATENT", "seeds")
    OUTPUT_TOOLTIPS = ("The denoised latent, for VAEDecode.",
                       "The seed of each image in the batch (image i uses seed + i, wrapping from "
                       "18446744073709551615 to 0), comma separated.")
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        import comfy.samplers
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The Z-Image model."}),
                "positive": ("CONDITIONING", {"tooltip": "The prompt, from CLIPTextEncode."}),
                "width": ("INT", {"default": 1024, "min": 64, "max": MAX_RESOLUTION, "step": 16,
                                  "tooltip": "Image width in pixels (used when no latent is connected)."}),
                "height": ("INT", {"default": 1024, "min": 64, "max": MAX_RESOLUTION, "step": 16,
                                   "tooltip": "Image height in pixels (used when no latent is connected)."}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 64,
                                       "tooltip": "Images per run (used when no latent is connected)."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                                 "tooltip": "Noise seed; the same seed and settings give the same image. "
                                            "Image i of a batch uses seed + i, so any image can be re-made alone; past "
                                            "the largest seed (2^64-1) it wraps to 0, 1, … (the seeds output "
                                            "lists them)."}),
                "steps": ("INT", {"default": 8, "min": 1, "max": 100,
                                  "tooltip": "Network evaluations. Turbo is distilled for 8."}),
                "cfg": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 30.0, "step": 0.1, "round": 0.01,
                                  "tooltip": "Guidance. 1.0 for Turbo: the negative prompt is then neither encoded "
                                             "nor run, one model call per step. Above 1 (Base model, or by "
                                             "choice) the negative is used: two calls per step."}),
                "shift": ("FLOAT", {"default": 3.0, "min": 0.0, "max": 100.0, "step": 0.01,
                                    "tooltip": "Flow-matching schedule shift. Z-Image uses 3.0."}),
                "sampler_name": (comfy.samplers.KSampler.SAMPLERS, {"default": "euler",
                                 "tooltip": "ComfyUI sampler. euler or res_multistep suit Turbo."}),
                "scheduler": (schedule_names(), {"default": "simple",
                              "tooltip": "Sigma schedule. simple is Z-Image's native one; lowstep (this pack) "
                                         "spends more steps on composition and fine detail, for 4-9 steps."}),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                      "tooltip": "Below 1 with an input latent: img2img strength."}),
            },
            "optional": {
                "negative": ("CONDITIONING", {"lazy": True, "tooltip": "Negative prompt, used only when cfg > 1: "
                                              "at cfg 1 it is not even encoded."}),
                "latent_image": ("LATENT", {"tooltip": "Start latent (img2img); overrides width/height/batch."}),
                "preset": (preset_names(), {"default": CUSTOM,
                           "tooltip": "custom: the steps/cfg/shift/sampler/scheduler widgets. turbo: 8 steps, "
                                      "cfg 1, shift 3, euler/simple. base (Z-Image Base): 28 steps, cfg 4 with "
                                      "the negative prompt, shift 3, euler/simple; the widgets are then ignored."}),
                "variety": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 2.0, "step": 0.01,
                            "tooltip": "Seed variety. 0 = off (the exact image of before). Above 0 the prompt is "
                                       "blurred by a per-seed random nudge in the first steps only, so different "
                                       "seeds give different compositions (layout, pose, framing) while the "
                                       "prompt's content and the detail stay. 0.2-0.5 is subtle, 1 is strong."}),
                "variety_until": ("FLOAT", {"default": 0.3, "min": 0.0, "max": 1.0, "step": 0.05,
                                  "tooltip": "Fraction of the steps that get the nudge, from the start: 0.25 of 8 "
                                             "steps = the first 2. Longer: the picture drifts further from the "
                                             "prompt; shorter: only the rough layout changes."}),
            },
        }

    def check_lazy_status(self, cfg, negative=None, preset=CUSTOM, steps=8, shift=3.0, sampler_name="euler",
                          scheduler="simple", **kwargs):
        """Ask ComfyUI to evaluate the negative branch only when guidance will use it."""
        cfg = resolve_preset(preset, steps, cfg, shift, sampler_name, scheduler).cfg
        return ["negative"] if negative is None and not math.isclose(cfg, 1.0) else []

    def sample(self, model, positive, width, height, batch_size, seed, steps, cfg, shift, sampler_name, scheduler,
               denoise, negative=None, latent_image=None, preset=CUSTOM, variety=0.0, variety_until=0.3):
        latent = latent_image if latent_image is not None else checked_empty_latent(model, positive, width, height,
                                                                                    batch_size)
        settings = resolve_preset(preset, steps, cfg, shift, sampler_name, scheduler)
        if math.isclose(settings.cfg, 1.0):
            negative = None
        out = turbo_sample(model, positive, latent, seed, steps=settings.steps, cfg=settings.cfg,
                           shift=settings.shift, sampler_name=settings.sampler_name, scheduler=settings.scheduler,
                           denoise=denoise, negative=negative, variety=variety, variety_until=variety_until)
        return (out, ", ".join(str(s) for s in image_seeds(latent, seed)))


NODE_CLASS_MAPPINGS = {"ZImageTurboSampler": ZImageTurboSampler}
NODE_DISPLAY_NAME_MAPPINGS = {"ZImageTurboSampler": "Z-Image Turbo Sampler"}
