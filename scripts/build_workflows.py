#!/usr/bin/env python3
"""Write the shipped workflows and everything made from them.

For each workflow declared here (one per VRAM tier, the basic one, img2img, LoRA, ControlNet and Base ones):

- workflows/<name>.json      UI-format graph (what the frontend opens; the template browser lists this folder)
- workflows/api/<name>.json  its API-format twin: the UI graph converted with the same converter the tests and the
                             headless runner use, against the node definitions of the installed host
- workflows/<name>.png       a labelled card (tier, VRAM, files, prompt; never a sample picture) whose `prompt` and
                             `workflow` tEXt chunks hold exactly the API and UI JSON, written as ComfyUI's SaveImage
                             writes them (json.dumps), so dropping the PNG onto ComfyUI restores the graph
- workflows/<name>.jpg       the template browser's thumbnail (the frontend looks for <name>.jpg beside the JSON)
- workflows/icon.png         the pack's icon (pyproject.toml [tool.comfy] Icon)

<name> is what the template browser shows as the card's title and, with '-' and '_' made spaces, as its
description (frontends do so for custom-node templates, listed in the server's directory order): "01 Turbo 6 GB"
… "16 Base 24 GB", numbered in VARIANTS order so that the browser's alphabetical sort shows the tiers in order,
short enough for one card line, without '-' or '_'. The tools name a workflow by its short id (`6gb`, `basic`,
`base_12gb`), stored in the UI graph as `extra.zimage_turbo.id` with its former file name (`z_image_turbo_6gb`)
as `extra.zimage_turbo.former_name` (downloads/tiers.py reads both).

    .venv/bin/python scripts/build_workflows.py [--check]

--check writes nothing and fails when a file on disk differs from what would be generated (JSON by text, PNGs
by their text chunks and pixels, thumbnails by pixels within JPEG tolerance).
"""
from __future__ import annotations

import argparse
import io
import json
import re
import sys
import textwrap
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS_DIR = REPO / "workflows"
API_DIR = WORKFLOWS_DIR / "api"
PACK_CNR_ID = "comfyui-zimage-turbo"
CORE_CNR_ID = "comfy-core"
PACK_NODE_TYPES = {"ZImageDiffusionModelLoader", "ZImageTextEncoderLoader", "ZImageVAELoader",
                   "ZImageTurboSampler", "ZImageLatent", "ZImageSaveImage", "ZImageControlNetLoader"}
PACK_NODE_TYPES |= {"ZImageLoraLoader"}
DEFAULT_PROMPT = ("A red fox sitting in a snowy birch forest at golden hour, soft light, detailed fur, "
                  "shallow depth of field, photograph")
# The model files come from the one catalog of published files (also read by the planner and `download`); the
# names below stay importable from this script.
from zimage_turbo.downloads.catalog import (COMFY_ORG, DIT_BF16, DIT_Q4_K_M, TE_BF16, TE_Q4_K_M,  # noqa: E402,F401
                                            TE_Q5_K_M, TE_Q6_K, TE_Q8_0, VAE, qwen3_gguf)
from zimage_turbo.downloads.catalog import PublishedFile as ModelFile  # noqa: E402
from zimage_turbo.downloads.catalog import CN_UNION_2_1_8STEPS, CN_UNION_2_1_LITE  # noqa: E402
from zimage_turbo.downloads.catalog import DIT_BASE_BF16, DIT_BASE_Q4_K_M  # noqa: E402
from zimage_turbo.sampling.presets import PRESETS  # noqa: E402  (pure data)


@dataclass(frozen=True)
class Variant:
    """One shipped workflow: which files it loads and how it decodes."""
    id: str  # what the tools take: `download 6gb`, `run basic` (extra.zimage_turbo.id)
    title: str  # the template card's title, after its number (the file name is `NN <title>`)
    label: str  # big text on the card, e.g. "6 GB"
    headline: str  # one line: what it is for
    dit: ModelFile
    dit_dtype: str
    te: ModelFile
    tiled_decode: bool = False
    img2img: bool = False
    seed_control: str = "randomize"
    accent: str = "#3f789e"
    advice: tuple[str, ...] = field(default_factory=tuple)
    controlnet: str = ""  # "canny" | "control_image" | "inpaint": a Fun ControlNet graph (CONTROLNET_INPUTS)
    patch: ModelFile | None = None  # the ControlNet patch (models/model_patches)
    patch_dtype: str = "default"
    model: str = "turbo"  # "base": Z-Image Base (sampling preset, negative prompt, step cache; issue 19)
    lora: ModelFile | None = None  # a ZImageLoraLoader between the loaders and the sampler/prompt (issue 17)

    @property
    def name(self) -> str:
        """The file stem (and template card title): its number in VARIANTS, so alphabetical = tier order."""
        return f"{VARIANTS.index(self) + 1:02d} {self.title}"

    @property
    def former_name(self) -> str:
        """The file stem before readable titles (`z_image_turbo_6gb`): still accepted by the tools, and the
        prefix of the pictures the workflow saves."""
        return ("z_image_" if self.model == "base" else "z_image_turbo_") + self.id

    @property
    def sampling(self):
        """The sampler settings the workflow ships with (sampling/presets.py)."""
        return PRESETS[self.model]

    @property
    def dit_text(self) -> str:
        if self.dit.name.endswith(".gguf"):
            return f"DiT {self.dit.name.split('-')[-1].removesuffix('.gguf')} GGUF"
        return {"default": "DiT bf16", "fp8_e4m3fn": "DiT bf16 file run as fp8"}.get(self.dit_dtype,
                                                                                  f"DiT {self.dit_dtype}")

    @property
    def te_text(self) -> str:
        if self.te.name.endswith(".gguf"):
            return f"Qwen3-4B {self.te.name.removeprefix('Qwen3-4B-').removesuffix('.gguf')} GGUF"
        return "Qwen3-4B bf16"

    @property
    def files(self) -> list[ModelFile]:
        return [self.dit, self.te, VAE] + ([self.patch] if self.patch else []) + ([self.lora] if self.lora else [])


VARIANTS = [
    Variant("6gb", "Turbo 6 GB", "6 GB", "Text to image for 6 GB cards", DIT_Q4_K_M, "default", TE_Q4_K_M,
            tiled_decode=True, accent="#8a5a2b",
            advice=("Both big models are 4-bit GGUF (the DiT stays quantized in memory) and the VAE decodes in "
                    "512 px tiles, so the peak stays low. A Q5_K_M text encoder (Qwen3-4B-Q5_K_M.gguf, 2.89 GB) "
                    "also fits: pick it in the text encoder loader.",
                    "Still out of memory? Start ComfyUI with the flag --lowvram")),
    Variant("8gb", "Turbo 8 GB", "8 GB", "Text to image for 8 GB cards", DIT_BF16, "fp8_e4m3fn", TE_Q6_K,
            accent="#6b8e23",
            advice=("The DiT is the official bf16 file loaded with weight_dtype fp8_e4m3fn: half the memory of "
                    "bf16 (about 6.2 GB). The text encoder is a 6-bit GGUF; ComfyUI moves it out of VRAM "
                    "before sampling.",)),
    Variant("12gb", "Turbo 12 GB", "12 GB", "Text to image for 12 GB cards", DIT_BF16, "fp8_e4m3fn",
            TE_Q8_0, accent="#2e8b7a",
            advice=("fp8 DiT (the official bf16 file with weight_dtype fp8_e4m3fn) and an 8-bit GGUF text "
                    "encoder, which is close to bf16 quality.",)),
    Variant("24gb", "Turbo 16 to 24 GB", "24 GB", "Text to image in full bf16 for 16-24 GB cards", DIT_BF16,
            "default", TE_BF16, accent="#7a3f9e",
            advice=("Everything in bf16, the quality reference. The DiT alone is 12.3 GB: on 16 GB cards "
                    "ComfyUI offloads the text encoder between prompts.",)),
    Variant("basic", "Turbo basic (official files)", "basic",
            "Text to image with the official files (24 GB class cards)",
            DIT_BF16, "default", TE_BF16, seed_control="fixed", accent="#3f789e",
            advice=("Turbo is distilled for 8 steps at cfg 1: no negative prompt is needed (and none is run). "
                    "Set the seed control to 'randomize' for a new picture each run.",)),
    Variant("img2img", "Turbo img2img", "img2img", "Image to image (8 GB tier files)", DIT_BF16,
            "fp8_e4m3fn", TE_Q6_K, img2img=True, accent="#9e3f5a",
            advice=("Load a picture in 'Input image'; denoise sets how much changes (0.6 keeps the composition, "
                    "0.8-0.9 repaints more). The output takes the input's size (sides are rounded to what the "
                    "VAE needs). Swap the loaders for another tier's files as you like.",)),
]
# ------------------------------------------------------------------------------ LoRA variant (issue 17)
# The LoRA slot ships with DiffSynth-Studio's Z-Image-Turbo DistillPatch, a real published Turbo LoRA (bare
# DiffSynth keys) that the missing-model dialog can download; users pick their own LoRA in its place.
from zimage_turbo.downloads.catalog import LORA_DISTILL_PATCH  # noqa: E402
LORA_ADVICE = ("Pick your LoRA in 'LoRA' (models/loras): ComfyUI, ai-toolkit, diffusers/PEFT, DiffSynth, kohya / "
               "musubi-tuner and LyCORIS files load as they are. 'LoRA report' shows the format found, how many "
               "weights it patched and every key it could not map. The slot ships with DiffSynth's "
               "Z-Image-Turbo DistillPatch (model.safetensors), which keeps 8-step quality for LoRAs trained "
               "on Turbo without an adapter; chain a second Z-Image LoRA Loader for your own LoRA.")
VARIANTS.append(Variant("8gb_lora", "Turbo LoRA 8 GB", "LoRA 8 GB",
                        "Text to image with a LoRA for 8 GB cards", DIT_BF16, "fp8_e4m3fn", TE_Q6_K,
                        accent="#9e7a3f", lora=LORA_DISTILL_PATCH,
                        advice=(LORA_ADVICE, "The DiT is the official bf16 file run as fp8: the LoRA runs beside "
                                "the fp8 layers (never baked into them); on GGUF DiTs beside the quantized "
                                "blocks.")))
# ------------------------------------------------------------------------------ Fun ControlNet variants (issue 18)
CONTROLNET_ADVICE = {
    "canny": "Load a photo or drawing in 'Control image': core's Canny node turns it into edges the picture follows.",
    "control_image": "Load a ready control image in 'Control image' (a depth map, an OpenPose skeleton, HED/lineart "
                     "or MLSD lines, e.g. from comfyui_controlnet_aux); it goes to the ControlNet as it is.",
    "inpaint": "Load the picture in 'Image to inpaint' and paint the area to repaint (right-click > Open in "
               "MaskEditor); the prompt describes the new content. 2.x patches only.",
}
CONTROLNET_TIERS = (  # (tier, DiT, its weight_dtype, text encoder, patch, the patch's weight_dtype, tiled decode)
    ("6gb", DIT_Q4_K_M, "default", TE_Q4_K_M, CN_UNION_2_1_LITE, "fp8_e4m3fn", True),
    ("12gb", DIT_BF16, "fp8_e4m3fn", TE_Q8_0, CN_UNION_2_1_8STEPS, "fp8_e4m3fn", False),
)
CONTROLNET_KINDS = (("canny", "Canny", "canny edges from an input image"),
                    ("depth", "Depth", "a ready depth / pose / lineart control image"),
                    ("inpaint", "Inpaint", "inpainting with a mask"))


def controlnet_variants() -> list[Variant]:
    out = []
    for tier, dit, dit_dtype, te, patch, patch_dtype, tiled in CONTROLNET_TIERS:
        gb = tier.removesuffix("gb")
        for kind, word, what in CONTROLNET_KINDS:
            mode = "control_image" if kind == "depth" else kind
            patch_note = (f"The ControlNet is alibaba-pai's Fun ControlNet Union {patch.name.split('Union-')[1]} "
                          f"loaded with weight_dtype {patch_dtype} (half its bf16 memory) by the pack's Z-Image "
                          "ControlNet Loader; a GGUF made with `python -m zimage_turbo quantize <patch>.safetensors "
                          "<patch>-Q8_0.gguf --type Q8_0` (or Q4_K) in models/model_patches loads there too and "
                          "stays quantized.")
            out.append(Variant(f"controlnet_{kind}_{tier}", f"ControlNet {word} {gb} GB",
                               f"{word} {gb} GB", f"ControlNet ({what}) for {gb} GB cards", dit, dit_dtype, te,
                               tiled_decode=tiled, accent="#5a4a9e", controlnet=mode, patch=patch,
                               patch_dtype=patch_dtype, advice=(CONTROLNET_ADVICE[mode], patch_note)))
    return out


VARIANTS += controlnet_variants()
# ------------------------------------------------------------------------------ Z-Image Base variants (issue 19)
BASE_ADVICE = ("Z-Image Base is the undistilled model: 28 steps at cfg 4 with a real negative prompt, so each "
               "step runs the model twice (ComfyUI batches positive and negative in one call when memory "
               "allows). The Step cache node (core EasyCache) ships at reuse_threshold 0, which is exactly "
               "no caching; raise it (0.2 is core's default) to reuse the model output on steps whose input "
               "barely changed, fewer model calls for a small change in the picture.")
BASE_TIERS = (  # (tier, DiT, its weight_dtype, text encoder, tiled decode, advice)
    ("6gb", DIT_BASE_Q4_K_M, "default", TE_Q4_K_M, True,
     "For 6-8 GB cards: unsloth's 4-bit GGUF of Base (stays quantized in memory) and a 4-bit GGUF text "
     "encoder; the VAE decodes in 512 px tiles."),
    ("12gb", DIT_BASE_BF16, "fp8_e4m3fn", TE_Q8_0, False,
     "The official Base bf16 file loaded with weight_dtype fp8_e4m3fn (half its memory) and an 8-bit GGUF "
     "text encoder."),
    ("24gb", DIT_BASE_BF16, "default", TE_BF16, False, "Everything in bf16, the quality reference."),
)
VARIANTS += [Variant(f"base_{tier}", f"Base {tier.removesuffix('gb')} GB", f"Base {tier.removesuffix('gb')} GB",
                     f"Z-Image Base text to image for {tier.removesuffix('gb')} GB cards", dit, dtype, te,
                     tiled_decode=tiled, accent="#3f5a9e", model="base", advice=(BASE_ADVICE, advice))
             for tier, dit, dtype, te, tiled, advice in BASE_TIERS]
TIERS = [v for v in VARIANTS if v.label.endswith("GB")]


# ------------------------------------------------------------------------------------------------- graph spec
@dataclass
class Node:
    id: int
    type: str
    title: str
    pos: list
    size: list
    widgets: list
    inputs: list  # [(name, type)] socket inputs in slot order
    outputs: list  # [(name, type)]
    models: list = field(default_factory=list)  # [ModelFile]
    extra: dict = field(default_factory=dict)


def graph_spec(v: Variant) -> tuple[list[Node], list[tuple], list[tuple]]:
    """(nodes, links [(id, from, slot, to, slot, type)], groups [(title, [x, y, w, h], color)])."""
    dit_title = ("DiT: Z-Image Base " if v.model == "base" else "DiT: Z-Image-Turbo ") + v.dit_text.removeprefix("DiT ").replace(" file run as ", " as ")
    nodes = [
        Node(1, "ZImageDiffusionModelLoader", dit_title, [40, 90], [360, 82], [v.dit.name, v.dit_dtype], [],
             [("MODEL", "MODEL")], [v.dit]),
        Node(2, "ZImageTextEncoderLoader", f"Text encoder: {v.te_text}", [40, 232], [360, 58], [v.te.name], [],
             [("CLIP", "CLIP")], [v.te]),
        Node(3, "ZImageVAELoader", "VAE: Flux ae", [40, 350], [360, 58], [VAE.name], [], [("VAE", "VAE")],
             [VAE]),
        Node(4, "CLIPTextEncode", "Prompt", [440, 90], [440, 250], [DEFAULT_PROMPT], [("clip", "CLIP")],
             [("CONDITIONING", "CONDITIONING")]),
    ]
    links = [(1, 1, 0, 5, 0, "MODEL"), (2, 2, 0, 4, 0, "CLIP"), (3, 4, 0, 5, 1, "CONDITIONING")]
    groups = [("Models", [20, 20, 400, 410], "#3f789e"), ("Prompt", [420, 20, 480, 340], "#3f9e6b")]
    next_link = 4
    sampler_inputs = [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                      ("latent_image", "LATENT")]
    denoise = 0.6 if v.img2img else 1.0
    st = v.sampling
    sampler_title = (f"Z-Image Sampler (Base: {st.steps} steps, cfg {st.cfg:g})" if v.model == "base"
                     else "Z-Image Turbo Sampler (8 steps)")
    # widgets: ..., denoise, then the optional preset (custom = these widgets), variety (0 = off), variety_until
    sampler = Node(5, "ZImageTurboSampler", sampler_title, [920, 90], [340, 430],
                   [1024, 1024, 1, 42, v.seed_control, st.steps, st.cfg, st.shift, st.sampler_name, st.scheduler,
                    denoise, "custom", 0.0, 0.3], sampler_inputs,
                   [("LATENT", "LATENT"), ("seeds", "STRING")])
    if v.tiled_decode:
        decode = Node(6, "VAEDecodeTiled", "Decode in 512 px tiles", [1300, 90], [320, 150],
                      [512, 64, 64, 8], [("samples", "LATENT"), ("vae", "VAE")], [("IMAGE", "IMAGE")])
    else:
        decode = Node(6, "VAEDecode", "Decode", [1300, 90], [320, 46], [], [("samples", "LATENT"), ("vae", "VAE")],
                      [("IMAGE", "IMAGE")])
    if v.id == "basic":
        save = Node(7, "SaveImage", "Save", [1300, 290], [420, 450], ["z_image_turbo"], [("images", "IMAGE")], [])
    else:
        save = Node(7, "ZImageSaveImage", "Save (with A1111 parameters)", [1300, 290], [420, 450],
                    [v.former_name, True],
                    [("images", "IMAGE")], [])
    nodes += [sampler, decode, save]
    links += [(next_link, 5, 0, 6, 0, "LATENT"), (next_link + 1, 3, 0, 6, 1, "VAE"),
              (next_link + 2, 6, 0, 7, 0, "IMAGE")]
    next_link += 3
    groups += [("Sample", [900, 20, 380, 520], "#8a6a2b"), ("Decode and save", [1280, 20, 460, 740], "#6b3f9e")]
    if v.img2img:
        nodes += [
            Node(8, "LoadImage", "Input image", [440, 440], [250, 330], ["example.png", "image"], [],
                 [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
            Node(9, "VAEEncode", "Encode input image", [705, 440], [180, 46], [],  # fits the frontend's 171 px
                 [("pixels", "IMAGE"), ("vae", "VAE")], [("LATENT", "LATENT")]),
        ]
        links += [(next_link, 8, 0, 9, 0, "IMAGE"), (next_link + 1, 3, 0, 9, 1, "VAE"),
                  (next_link + 2, 9, 0, 5, 3, "LATENT")]
        groups.append(("Input image (img2img)", [420, 370, 480, 420], "#9e3f5a"))
    if v.controlnet:
        add_controlnet(v, nodes, links, groups)
    if v.model == "base":
        add_base_nodes(nodes, links, groups)
    if v.lora:
        add_lora(v, nodes, links, groups)
    return nodes, links, groups


def add_lora(v: Variant, nodes: list[Node], links: list[tuple], groups: list[tuple]) -> None:
    """Insert ZImageLoraLoader between the loaders and the sampler / prompt, its report into a Preview as Text."""
    lora_id, report_id = 40, 41
    sampler = next(n for n in nodes if n.type == "ZImageTurboSampler")
    prompt = next(n for n in nodes if n.type == "CLIPTextEncode")
    next_link = max(l[0] for l in links) + 1
    for i, l in enumerate(links):  # DiT -> sampler becomes DiT -> LoRA, text encoder -> prompt becomes TE -> LoRA
        if (l[3], l[4]) == (sampler.id, 0):
            links[i] = (l[0], l[1], l[2], lora_id, 0, "MODEL")
        elif (l[3], l[4]) == (prompt.id, 0):
            links[i] = (l[0], l[1], l[2], lora_id, 1, "CLIP")
    links += [(next_link, lora_id, 0, sampler.id, 0, "MODEL"), (next_link + 1, lora_id, 1, prompt.id, 0, "CLIP"),
              (next_link + 2, lora_id, 2, report_id, 0, "STRING")]
    y = 830
    nodes += [
        Node(lora_id, "ZImageLoraLoader", "LoRA", [40, y + 60], [360, 130], [v.lora.name, 1.0, 1.0],
             [("model", "MODEL"), ("clip", "CLIP")], [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("report", "STRING")],
             [v.lora]),
        Node(report_id, "PreviewAny", "LoRA report (what matched)", [440, y + 60], [440, 240], [],
             [("source", "*")], []),
    ]
    groups.append(("LoRA", [20, y, 880, 320], "#9e7a3f"))


# Apply node (core's ZImageFunControlnet) input slots: model, model_patch, vae, then the optional images.
APPLY_INPUTS = [("model", "MODEL"), ("model_patch", "MODEL_PATCH"), ("vae", "VAE"), ("image", "IMAGE"),
                ("inpaint_image", "IMAGE"), ("mask", "MASK")]
# mode -> (LoadImage title, [(LoadImage output slot, apply input slot)], with core's Canny in between, strength)
CONTROLNET_INPUTS = {
    "canny": ("Control image (edges are taken from it)", [(0, 3)], True, 0.75),
    "control_image": ("Control image (depth / pose / lineart)", [(0, 3)], False, 0.75),
    "inpaint": ("Image to inpaint (paint the mask on it)", [(0, 4), (1, 5)], False, 1.0),
}


def add_controlnet(v: Variant, nodes: list[Node], links: list[tuple], groups: list[tuple]) -> None:
    """Insert the Fun ControlNet between the DiT loader and the sampler: patch loader, image, (Canny,) apply."""
    title, wires, canny, strength = CONTROLNET_INPUTS[v.controlnet]
    loader_id, image_id, canny_id, apply_id = 20, 21, 22, 23
    sampler = next(n for n in nodes if n.type == "ZImageTurboSampler")
    dit = next(n for n in nodes if n.type == "ZImageDiffusionModelLoader")
    vae = next(n for n in nodes if n.type == "ZImageVAELoader")
    next_link = max(l[0] for l in links) + 1
    to_sampler = next(i for i, l in enumerate(links) if l[3] == sampler.id and l[4] == 0)
    links[to_sampler] = (links[to_sampler][0], dit.id, 0, apply_id, 0, "MODEL")
    new = [(apply_id, 0, sampler.id, 0, "MODEL"), (loader_id, 0, apply_id, 1, "MODEL_PATCH"),
           (vae.id, 0, apply_id, 2, "VAE")]
    if canny:
        new += [(image_id, 0, canny_id, 0, "IMAGE"), (canny_id, 0, apply_id, 3, "IMAGE")]
    else:
        new += [(image_id, out, apply_id, slot, "MASK" if out == 1 else "IMAGE") for out, slot in wires]
    links += [(next_link + i, *l) for i, l in enumerate(new)]
    y = 830
    nodes += [
        Node(loader_id, "ZImageControlNetLoader", f"ControlNet: Fun Union {v.patch.name.split('Union-')[1].removesuffix('.safetensors')}",
             [40, y + 60], [360, 82], [v.patch.name, v.patch_dtype], [], [("MODEL_PATCH", "MODEL_PATCH")], [v.patch]),
        Node(image_id, "LoadImage", title, [440, y + 60], [300, 330], ["example.png", "image"], [],
             [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
        Node(apply_id, "ZImageFunControlnet", "Apply Z-Image Fun ControlNet", [780, y + 230], [320, 170], [strength],
             APPLY_INPUTS, [("MODEL", "MODEL")]),
    ]
    if canny:
        nodes.append(Node(canny_id, "Canny", "Canny edges", [780, y + 60], [320, 106], [0.4, 0.8],
                          [("image", "IMAGE")], [("IMAGE", "IMAGE")]))
    groups.append(("ControlNet", [20, y, 1260, 420], "#5a4a9e"))


NEGATIVE_PROMPT = "blurry, low quality, distorted, extra limbs, watermark, text"
# core EasyCache widgets: reuse_threshold (0 = never reuse: the uncached picture), start_percent, end_percent, verbose
STEP_CACHE_WIDGETS = [0.0, 0.15, 0.95, False]


def add_base_nodes(nodes: list[Node], links: list[tuple], groups: list[tuple]) -> None:
    """Base graphs: a negative prompt into the sampler, and core's EasyCache between the DiT loader and the
    sampler (at threshold 0 until the user raises it)."""
    negative_id, cache_id = 30, 31
    sampler = next(n for n in nodes if n.type == "ZImageTurboSampler")
    clip = next(n for n in nodes if n.type == "ZImageTextEncoderLoader")
    next_link = max(l[0] for l in links) + 1
    to_sampler = next(i for i, l in enumerate(links) if l[3] == sampler.id and l[4] == 0)
    source = links[to_sampler]
    links[to_sampler] = (source[0], source[1], source[2], cache_id, 0, "MODEL")
    links += [(next_link, cache_id, 0, sampler.id, 0, "MODEL"), (next_link + 1, clip.id, 0, negative_id, 0, "CLIP"),
              (next_link + 2, negative_id, 0, sampler.id, 2, "CONDITIONING")]
    nodes += [
        Node(negative_id, "CLIPTextEncode", "Negative prompt (used: cfg 4)", [440, 890], [440, 130],
             [NEGATIVE_PROMPT], [("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")]),
        Node(cache_id, "EasyCache", "Step cache (EasyCache, 0 = off)", [940, 890],
             [340, 170], list(STEP_CACHE_WIDGETS), [("model", "MODEL")], [("MODEL", "MODEL")]),
    ]
    groups.append(("Base: negative prompt and step cache", [420, 830, 920, 300], "#3f5a9e"))


def _steps_cfg(v: Variant) -> str:
    return f"{v.sampling.steps} steps, cfg {v.sampling.cfg:g}" + (" with the negative prompt" if v.model == "base" else "")


def note_text(v: Variant) -> str:
    lines = [f"Z-Image-Turbo: {v.headline} (ComfyUI-ZImage-Turbo).", "",
             "Files to download (the missing-model dialog offers the links):"]
    for f in v.files:
        size = f" ({f.size})" if f.size else ""
        lines.append(f"- models/{f.directory}/{f.name}{size}\n  from {f.url}")
    if any(f.name.endswith(".gguf") for f in v.files):  # the dialog offers no Download button for .gguf
        lines += ["GGUF files get no Download button there; one command fetches, resumes and checks them all:",
                  f"  python -m zimage_turbo download {v.id} --models-dir <ComfyUI>/models",
                  "  (see the pack's README, Install)"]
    size = ("the input image's size, denoise 0.6" if v.img2img else "1024x1024")
    lines += ["", *v.advice, "",
              f"Defaults: {size}, {_steps_cfg(v)}, euler / simple, shift 3. Press Queue (Run)."]
    if not v.img2img:
        tiers = [t for t in TIERS if t.model == v.model and not (t.controlnet or t.lora)]
        lines.append("Other cards: this pack's templates " + ", ".join(f"'{t.name}'" for t in tiers) + ".")
    return "\n".join(lines)


def build_ui(v: Variant) -> dict:
    nodes, links, groups = graph_spec(v)
    by_target = {(l[3], l[4]): l[0] for l in links}
    by_origin: dict[tuple[int, int], list[int]] = {}
    for l in links:
        by_origin.setdefault((l[1], l[2]), []).append(l[0])
    order = _execution_order(nodes, links)
    ui_nodes = []
    for n in nodes:
        properties = {"Node name for S&R": n.type, "cnr_id": PACK_CNR_ID if n.type in PACK_NODE_TYPES else CORE_CNR_ID}
        if n.models:
            properties["models"] = [m.entry() for m in n.models]
        ui_nodes.append({
            "id": n.id, "type": n.type, "title": n.title, "pos": n.pos, "size": n.size, "flags": {},
            "order": order[n.id], "mode": 0,
            "inputs": [{"name": name, "type": t, "link": by_target.get((n.id, i))} for i, (name, t) in enumerate(n.inputs)],
            "outputs": [{"name": name, "type": t, "links": by_origin.get((n.id, i), []), "slot_index": i}
                        for i, (name, t) in enumerate(n.outputs)],
            "properties": properties, "widgets_values": n.widgets, **n.extra,
        })
    note_id = max(n.id for n in nodes) + 1
    note_pos = [40, 820] if v.img2img else [40, 470]
    ui_nodes.append({"id": note_id, "type": "Note", "title": f"Read me: {v.headline}", "pos": note_pos,
                     "size": [840, 330] if v.img2img else [840, 300], "flags": {}, "order": len(ui_nodes),
                     "mode": 0, "inputs": [], "outputs": [], "properties": {}, "widgets_values": [note_text(v)],
                     "color": "#432", "bgcolor": "#653"})
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"comfyui-zimage-turbo/{v.former_name}")), "revision": 0,
        "last_node_id": note_id, "last_link_id": max(l[0] for l in links),
        "nodes": ui_nodes, "links": [list(l) for l in links],
        "groups": [{"id": i + 1, "title": title, "bounding": box, "color": color, "font_size": 24, "flags": {}}
                   for i, (title, box, color) in enumerate(groups)],
        "config": {},
        "extra": {"ds": {"scale": 0.75, "offset": [110, 90]},
                  "zimage_turbo": {"id": v.id, "former_name": v.former_name}},
        "version": 0.4,
    }


def _execution_order(nodes: list[Node], links: list[tuple]) -> dict[int, int]:
    """A topological order (litegraph's `order`): sources first, ties by id."""
    deps = {n.id: {l[1] for l in links if l[3] == n.id} for n in nodes}
    done: dict[int, int] = {}
    while len(done) < len(nodes):
        ready = sorted(i for i, d in deps.items() if i not in done and d <= done.keys())
        for i in ready:
            done[i] = len(done)
    return done


# ------------------------------------------------------------------------------------------------ pictures
CARD_SIZE = 1024
THUMB_SIZE = 512
BG, PANEL, TEXT, MUTED, WARN = "#17191e", "#23262d", "#eceff4", "#a3abb8", "#ffcc66"


def _font(size: int):
    from PIL import ImageFont
    return ImageFont.load_default(size=size)  # Pillow's bundled font: same pixels on every machine


def _settings_line(v: Variant) -> str:
    parts = ["1024x1024", *_steps_cfg(v).split(", "), "euler / simple", "shift 3", "seed control " + v.seed_control]
    if v.img2img:
        parts[0] = "input image size"
        parts.append("denoise 0.6")
    if v.tiled_decode:
        parts.append("tiled VAE decode 512/64")
    if v.dit_dtype != "default":
        parts.append(f"DiT weight_dtype {v.dit_dtype}")
    return " · ".join(parts)


def render_card(v: Variant):
    """The PNG's picture: a labelled card, clearly not a generated sample."""
    from PIL import Image, ImageDraw
    img = Image.new("RGB", (CARD_SIZE, CARD_SIZE), BG)
    d = ImageDraw.Draw(img)
    d.rectangle([0, 0, CARD_SIZE, 200], fill=v.accent)
    d.text((48, 34), "Z-Image Turbo · ComfyUI workflow", font=_font(34), fill=TEXT)
    d.text((48, 84), v.label + (" VRAM" if v in TIERS else ""), font=_font(84), fill=TEXT)
    d.rectangle([0, 200, CARD_SIZE, 270], fill="#2b2410")
    d.text((48, 212), "WORKFLOW CARD - not a generated image.", font=_font(26), fill=WARN)
    d.text((48, 242), "Drop this PNG onto ComfyUI to open the workflow, then press Run.", font=_font(20),
           fill=WARN)
    y = 296
    d.text((48, y), v.headline, font=_font(30), fill=TEXT)
    y += 52
    d.text((48, y), "Model files", font=_font(26), fill=MUTED)
    y += 40
    for f in v.files:
        d.rounded_rectangle([40, y - 8, CARD_SIZE - 40, y + 62], radius=10, fill=PANEL)
        d.text((60, y), f.name + (f"   {f.size}" if f.size else ""), font=_font(26), fill=TEXT)
        d.text((60, y + 34), f"models/{f.directory}/   from {f.source}", font=_font(19), fill=MUTED)
        y += 84
    y += 6
    d.text((48, y), "Settings", font=_font(26), fill=MUTED)
    y += 38
    for line in textwrap.wrap(_settings_line(v), 70):
        d.text((48, y), line, font=_font(22), fill=TEXT)
        y += 30
    y += 14
    d.text((48, y), "Prompt", font=_font(26), fill=MUTED)
    y += 40
    box_top = y - 10
    lines = textwrap.wrap(DEFAULT_PROMPT, 60)
    d.rounded_rectangle([40, box_top, CARD_SIZE - 40, box_top + 22 + 34 * len(lines)], radius=10, fill=PANEL)
    for line in lines:
        d.text((60, y), line, font=_font(26), fill=TEXT)
        y += 34
    d.text((48, CARD_SIZE - 56), f"ComfyUI-ZImage-Turbo · workflows/{v.name}.json", font=_font(20), fill=MUTED)
    return img


def render_thumbnail(v: Variant):
    """The template browser's preview: tier, VRAM and the two big files, readable at card size."""
    from PIL import Image, ImageDraw
    img = Image.new("RGB", (THUMB_SIZE, THUMB_SIZE), BG)
    d = ImageDraw.Draw(img)
    d.rectangle([0, 0, THUMB_SIZE, 230], fill=v.accent)
    d.text((32, 28), "Z-Image Turbo", font=_font(36), fill=TEXT)
    d.text((32, 86), v.label, font=_font(96 if len(v.label) <= 6 else 76), fill=TEXT)
    if v in TIERS:
        d.text((36, 192), "VRAM tier", font=_font(26), fill=TEXT)
    y = 262
    for text in (v.dit_text, v.te_text, "Flux VAE" + (", tiled decode" if v.tiled_decode else "")):
        d.text((32, y), text, font=_font(30), fill=TEXT)
        y += 46
    d.text((32, THUMB_SIZE - 84), "image to image · 8 steps" if v.img2img else f"text to image · 1024x1024 · {v.sampling.steps} steps", font=_font(24),
           fill=MUTED)
    d.text((32, THUMB_SIZE - 46), "workflow card, not a sample image", font=_font(22), fill=WARN)
    return img


def render_icon():
    """The pack's icon (pyproject [tool.comfy] Icon): 400x400, no metadata."""
    from PIL import Image, ImageDraw
    img = Image.new("RGB", (400, 400), BG)
    d = ImageDraw.Draw(img)
    d.rounded_rectangle([24, 24, 376, 376], radius=48, fill="#3f789e")
    d.text((200, 170), "Z", font=_font(220), fill=TEXT, anchor="mm")
    d.text((200, 316), "Image Turbo", font=_font(48), fill=TEXT, anchor="mm")
    return img


def png_bytes(card, api: dict, ui: dict) -> bytes:
    """The card as PNG with ComfyUI SaveImage's metadata: tEXt `prompt` then `workflow`, each json.dumps()."""
    from PIL.PngImagePlugin import PngInfo
    meta = PngInfo()
    meta.add_text("prompt", json.dumps(api))
    meta.add_text("workflow", json.dumps(ui))
    buf = io.BytesIO()
    card.save(buf, format="PNG", pnginfo=meta, compress_level=9)
    return buf.getvalue()


def jpg_bytes(thumb) -> bytes:
    buf = io.BytesIO()
    thumb.save(buf, format="JPEG", quality=88, optimize=True)
    return buf.getvalue()


def _same_png(path: Path, expected: bytes) -> bool:
    from PIL import Image
    if not path.exists():
        return False
    try:
        have, want = Image.open(path), Image.open(io.BytesIO(expected))
        have.load()
        want.load()
    except OSError:
        return False
    return (have.text == want.text and list(have.text) == list(want.text) and have.size == want.size
            and have.convert("RGB").tobytes() == want.convert("RGB").tobytes())


def _same_jpg(path: Path, expected: bytes) -> bool:
    from PIL import Image, ImageChops, ImageStat
    if not path.exists():
        return False
    try:
        have, want = Image.open(path).convert("RGB"), Image.open(io.BytesIO(expected)).convert("RGB")
    except OSError:
        return False
    if have.size != want.size:
        return False
    # JPEG encoders of other library versions move pixels by a few levels; changed content moves many by far more
    strong = ImageChops.difference(have, want).convert("L").point(lambda x: 255 if x > 48 else 0)
    return ImageStat.Stat(strong).sum[0] / 255 <= 16


# ------------------------------------------------------------------------------------------------- driver
# Core nodes from comfy_extras the ControlNet workflows use (a server loads them at start; in-process they are
# imported here). A host without the Z-Image ControlNet (0.3.75) gets its declaration as newer ComfyUI has it
# (comfy_extras/nodes_model_patch.py), so the API twins are the same whichever host builds them.
EXTRA_CORE_NODES = (("comfy_extras.nodes_canny", "Canny"), ("comfy_extras.nodes_model_patch", "ZImageFunControlnet"))
EXTRA_CORE_NODES += (("comfy_extras.nodes_preview_any", "PreviewAny"),)  # the LoRA report (issue 17)
DECLARED_INPUTS = {"ZImageFunControlnet": {
    "required": {"model": ("MODEL",), "model_patch": ("MODEL_PATCH",), "vae": ("VAE",),
                 "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01})},
    "optional": {"image": ("IMAGE",), "inpaint_image": ("IMAGE",), "mask": ("MASK",)}}}


def core_extra_node_classes() -> dict:
    import importlib
    out = {}
    for module, name in EXTRA_CORE_NODES:
        try:
            out[name] = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            declared = DECLARED_INPUTS[name]
            out[name] = type(name, (), {"INPUT_TYPES": classmethod(lambda cls, d=declared: d)})
    return out


# Core nodes whose class name is not their node type (V3 io.ComfyNode): node type -> (module, class)
CORE_V3_NODES = {"EasyCache": ("comfy_extras.nodes_easycache", "EasyCacheNode")}


def core_v3_node_classes() -> dict:
    import importlib
    return {node_type: getattr(importlib.import_module(module), cls) for node_type, (module, cls) in CORE_V3_NODES.items()}


def object_info_in_process() -> dict:
    """Node definitions ({type: {"input": ...}}) of core nodes and this pack, read from the classes."""
    import comfy.cli_args
    comfy.cli_args.args.cpu = True
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO]
    import utils.extra_config  # noqa: F401
    import nodes
    from zimage_turbo import NODE_CLASS_MAPPINGS
    classes = {**nodes.NODE_CLASS_MAPPINGS, **core_extra_node_classes(), **core_v3_node_classes(),
               **NODE_CLASS_MAPPINGS}
    return {name: {"input": cls.INPUT_TYPES()} for name, cls in classes.items()}


# A file name every OS and the frontend's template URLs take: printable ASCII without what Windows forbids
# (<>:"/\\|?*) or what a URL path would cut (#, %), no leading or trailing space or dot; no '-' or '_', which the
# template browser turns into spaces in the card's description.
PORTABLE_NAME = re.compile(r"(?![ .])[ !$&'()+,.0-9;=@A-Z\[\]^`a-z{}~]+(?<![ .])")


def check_names() -> None:
    """Every stem portable, ids unique, and the stems' alphabetical order the order of VARIANTS."""
    names = [v.name for v in VARIANTS]
    bad = [n for n in names if not PORTABLE_NAME.fullmatch(n)]
    if bad or sorted(names) != names or len({v.id for v in VARIANTS}) != len(VARIANTS):
        raise SystemExit(f"workflow names: not portable or readable {bad}, or not in VARIANTS order, or an id "
                         "repeated")


def generate(info: dict) -> dict[Path, tuple[bytes, str]]:
    """{path: (content, kind)} of every generated file; kind is json, png or jpg."""
    from zimage_turbo.headless.workflow import ui_to_api
    check_names()
    out: dict[Path, tuple[bytes, str]] = {}
    for v in VARIANTS:
        ui = build_ui(v)
        api = ui_to_api(ui, info)
        for path, data in ((WORKFLOWS_DIR / f"{v.name}.json", ui), (API_DIR / f"{v.name}.json", api)):
            out[path] = ((json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode(), "json")
        out[WORKFLOWS_DIR / f"{v.name}.png"] = (png_bytes(render_card(v), api, ui), "png")
        out[WORKFLOWS_DIR / f"{v.name}.jpg"] = (jpg_bytes(render_thumbnail(v)), "jpg")
    buf = io.BytesIO()
    render_icon().save(buf, format="PNG", compress_level=9)
    out[WORKFLOWS_DIR / "icon.png"] = (buf.getvalue(), "png")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the files on disk differ")
    args = parser.parse_args()
    files = generate(object_info_in_process())
    stale = []
    for path, (content, kind) in files.items():
        if args.check:
            same = {"json": lambda: path.exists() and path.read_bytes() == content,
                    "png": lambda: _same_png(path, content), "jpg": lambda: _same_jpg(path, content)}[kind]()
            if not same:
                stale.append(str(path.relative_to(REPO)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            if kind == "json" and path.exists() and path.read_bytes() == content:
                continue
            if kind in ("png", "jpg") and (_same_png if kind == "png" else _same_jpg)(path, content):
                continue  # same pictures and chunks: keep the file (no churn from encoder versions)
            path.write_bytes(content)
            print("wrote", path.relative_to(REPO))
    known = {p.name for p in files if p.parent == WORKFLOWS_DIR}
    extra = [p for p in sorted(WORKFLOWS_DIR.glob("*")) if p.is_file() and p.name not in known]
    extra += [p for p in sorted(API_DIR.glob("*.json")) if p not in files]
    if extra:
        print("not generated by this script (remove them, or declare them here):",
              *(str(p.relative_to(REPO)) for p in extra), sep="\n  ")
        if args.check:
            return 1
    if stale:
        print("out of date (run scripts/build_workflows.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
