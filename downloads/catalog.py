"""The published model files: the one table the workflows' `properties.models`, the planner and `download` read.

Every file a shipped workflow names, and every published file the pack is known to load, is one `PublishedFile`
row below. `scripts/build_workflows.py` builds the workflows' model entries from these rows, `planner/catalog.py`
turns them into planner records (`role` + `weight`), and `python -m zimage_turbo download` fetches them by name
or by the tier a workflow stands for. Sizes are as stated on the hosting page ("" when the page states none).

Adding a file: one constant with the exact resolve URL from its model page (never a guessed one), appended to
CATALOG; a workflow then names it through the constant. `tests/test_catalog.py` fails when a workflow names a
file that is not exactly a row here.

Pure data, no torch or comfy imports: the workflow builder and the CLI import it before any host exists.
"""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

HF = "https://huggingface.co"
COMFY_ORG = f"{HF}/Comfy-Org/z_image_turbo/resolve/main/split_files"


@dataclass(frozen=True)
class PublishedFile:
    """One downloadable model file: where it goes, where it comes from, what it holds."""
    name: str  # file name under models/<directory>/
    directory: str  # ComfyUI models/ sub-folder
    url: str  # https://huggingface.co/<repo>/resolve/<revision>/<path>
    size: str  # as published on the hosting page; "" when not stated there
    source: str  # the hosting page, for people
    role: str = ""  # "dit" | "te" | "vae": planned and checked by content; other kinds (e.g. "control_patch") not
    weight: str = ""  # main weight type as the planner names it (BF16, F8_E4M3, Q4_K, ...)

    def entry(self) -> dict:
        """The workflow node's `properties.models` entry (what the frontend's missing-model dialog reads)."""
        return {"name": self.name, "url": self.url, "directory": self.directory}

    @property
    def hf_location(self) -> tuple[str, str, str]:
        """(repo_id, revision, path in repo) parsed from the resolve URL."""
        parts = urlsplit(self.url)
        segs = [unquote(s) for s in parts.path.strip("/").split("/")]
        if parts.netloc != "huggingface.co" or len(segs) < 5 or segs[2] != "resolve":
            raise ValueError(f"{self.url}: not a https://huggingface.co/<owner>/<repo>/resolve/<rev>/<path> URL")
        return f"{segs[0]}/{segs[1]}", segs[3], "/".join(segs[4:])


# ------------------------------------------------------------------------------------------ Comfy-Org repackage
DIT_BF16 = PublishedFile("z_image_turbo_bf16.safetensors", "diffusion_models",
                         f"{COMFY_ORG}/diffusion_models/z_image_turbo_bf16.safetensors", "12.3 GB",
                         "huggingface.co/Comfy-Org/z_image_turbo", "dit", "BF16")
TE_BF16 = PublishedFile("qwen_3_4b.safetensors", "text_encoders", f"{COMFY_ORG}/text_encoders/qwen_3_4b.safetensors",
                        "8.04 GB", "huggingface.co/Comfy-Org/z_image_turbo", "te", "BF16")
VAE = PublishedFile("ae.safetensors", "vae", f"{COMFY_ORG}/vae/ae.safetensors", "335 MB",
                    "huggingface.co/Comfy-Org/z_image_turbo", "vae", "F32")

# Comfy-Org's newer variants (ComfyUI's own Z-Image templates): INT8 ConvRot DiT (`.comfy_quant` int8_tensorwise
# with convrot; tensors I8 + F32 scales + U8 entries, reported 857 tensors) and the mixed-fp8 Qwen3 (fp8 layers
# beside bf16 ones). Their hosting page states no size we could read: reported figures are 5.78 GB / 6.20 GB and
# 5.63 GB; the planner computes sizes from the shapes and types instead.
DIT_INT8_CONVROT = PublishedFile("z_image_turbo_int8_convrot.safetensors", "diffusion_models",
                                 f"{COMFY_ORG}/diffusion_models/z_image_turbo_int8_convrot.safetensors", "",
                                 "huggingface.co/Comfy-Org/z_image_turbo", "dit", "I8")
TE_FP8_MIXED = PublishedFile("qwen_3_4b_fp8_mixed.safetensors", "text_encoders",
                             f"{COMFY_ORG}/text_encoders/qwen_3_4b_fp8_mixed.safetensors", "",
                             "huggingface.co/Comfy-Org/z_image_turbo", "te", "F8_E4M3")

# ------------------------------------------------------------------------------------------ community GGUFs
JAYN7 = f"{HF}/jayn7/Z-Image-Turbo-GGUF/resolve/main"
LEEJET = f"{HF}/leejet/Z-Image-Turbo-GGUF/resolve/main"


def dit_gguf(quant: str, size: str = "", repo: str = JAYN7) -> PublishedFile:
    """A DiT GGUF `z_image_turbo-<quant>.gguf`: jayn7's (ComfyUI-GGUF style: arch lumina2, 2-D pad tokens,
    embedders/refiners kept 16 bit) or leejet's (stable-diffusion.cpp: 1-D pad tokens, ComfyUI-GGUF issue #379)."""
    return PublishedFile(f"z_image_turbo-{quant}.gguf", "diffusion_models", f"{repo}/z_image_turbo-{quant}.gguf", size,
                         repo.removeprefix("https://").removesuffix("/resolve/main"), "dit", _planner_type(quant))


def _planner_type(quant: str) -> str:
    """`Q4_K_M` → `Q4_K`: llama.cpp's size suffixes name mixes whose main type is the K type."""
    return quant.removesuffix("_M").removesuffix("_S").removesuffix("_L")


# jayn7: names as linked from guides and scripts (Q4_K_M is 4,981,532,736 bytes; Q5_K_S 5.19 GB on MODELS.md;
# Q3_K_S per MODELS.md).
DIT_Q3_K_S = dit_gguf("Q3_K_S")
DIT_Q4_K_S = dit_gguf("Q4_K_S")
DIT_Q4_K_M = dit_gguf("Q4_K_M", "4.98 GB")
DIT_Q5_K_S = dit_gguf("Q5_K_S", "5.19 GB")
DIT_Q5_K_M = dit_gguf("Q5_K_M")
DIT_Q8_0 = dit_gguf("Q8_0")
# leejet (linked from stable-diffusion.cpp's docs/z_image.md; Q3_K from its example, Q4_0/Q5_0/Q6_K/Q8_0 from
# download scripts). leejet's Q8_0 has the same file name as jayn7's, so one models/ folder holds one of them
# (both load: the loader reads content); the catalog lists jayn7's.
DIT_SDCPP_Q3_K = dit_gguf("Q3_K", repo=LEEJET)
DIT_SDCPP_Q4_0 = dit_gguf("Q4_0", repo=LEEJET)
DIT_SDCPP_Q5_0 = dit_gguf("Q5_0", repo=LEEJET)
DIT_SDCPP_Q6_K = dit_gguf("Q6_K", repo=LEEJET)


def qwen3_gguf(quant: str, size: str) -> PublishedFile:
    """unsloth's Qwen3-4B GGUF of a quant (`Q6_K`, `Q4_K_M`, ...)."""
    name = f"Qwen3-4B-{quant}.gguf"
    return PublishedFile(name, "text_encoders", f"{HF}/unsloth/Qwen3-4B-GGUF/resolve/main/{name}", size,
                         "huggingface.co/unsloth/Qwen3-4B-GGUF", "te", _planner_type(quant))


def qwen3_instruct_gguf(quant: str, size: str = "") -> PublishedFile:
    """unsloth's Qwen3-4B-Instruct-2507 GGUF (stable-diffusion.cpp's recommended Z-Image encoder): the same
    architecture and tokenizer as Qwen3-4B, its own weights and rope_theta (read from the file's metadata)."""
    name = f"Qwen3-4B-Instruct-2507-{quant}.gguf"
    return PublishedFile(name, "text_encoders", f"{HF}/unsloth/Qwen3-4B-Instruct-2507-GGUF/resolve/main/{name}",
                         size, "huggingface.co/unsloth/Qwen3-4B-Instruct-2507-GGUF", "te", _planner_type(quant))


TE_Q4_K_M = qwen3_gguf("Q4_K_M", "2.50 GB")
TE_Q5_K_M = qwen3_gguf("Q5_K_M", "2.89 GB")
TE_Q6_K = qwen3_gguf("Q6_K", "3.31 GB")
TE_Q8_0 = qwen3_gguf("Q8_0", "4.28 GB")
TE_INSTRUCT_Q4_K_M = qwen3_instruct_gguf("Q4_K_M", "2.50 GB")  # 2,497,281,120 bytes
TE_INSTRUCT_Q5_K_M = qwen3_instruct_gguf("Q5_K_M")
TE_INSTRUCT_Q6_K = qwen3_instruct_gguf("Q6_K")
TE_INSTRUCT_Q8_0 = qwen3_instruct_gguf("Q8_0")

# ------------------------------------------------------------------------------------------ ControlNet patches
# alibaba-pai's Z-Image-Turbo Fun ControlNet Union (models/model_patches; loaded by ZImageControlNetLoader or core's
# ModelPatchLoader, applied by core's ZImageFunControlnet). 1.0: 6 control layers; 2.1: 15 control layers plus
# refiner control and inpainting (the -8steps files are distilled for Turbo's 8 steps, recommended by the authors);
# lite: 3 control layers. The model pages state no sizes.
FUN_CONTROLNET_1_0 = "alibaba-pai/Z-Image-Turbo-Fun-Controlnet-Union"
FUN_CONTROLNET_2_1 = "alibaba-pai/Z-Image-Turbo-Fun-Controlnet-Union-2.1"


def fun_controlnet(repo: str, name: str) -> PublishedFile:
    """A Fun ControlNet patch file of an alibaba-pai repository (bf16 safetensors)."""
    return PublishedFile(name, "model_patches", f"{HF}/{repo}/resolve/main/{name}", "", f"huggingface.co/{repo}",
                         "control_patch", "BF16")


CN_UNION_1_0 = fun_controlnet(FUN_CONTROLNET_1_0, "Z-Image-Turbo-Fun-Controlnet-Union.safetensors")
CN_UNION_2_1 = fun_controlnet(FUN_CONTROLNET_2_1, "Z-Image-Turbo-Fun-Controlnet-Union-2.1.safetensors")
CN_UNION_2_1_8STEPS = fun_controlnet(FUN_CONTROLNET_2_1, "Z-Image-Turbo-Fun-Controlnet-Union-2.1-8steps.safetensors")
CN_UNION_2_1_LITE = fun_controlnet(FUN_CONTROLNET_2_1,
                                   "Z-Image-Turbo-Fun-Controlnet-Union-2.1-lite-2601-8steps.safetensors")

# ------------------------------------------------------------------------------------------ Z-Image Base (issue 19)
# The undistilled model (Tongyi-MAI/Z-Image, 2026-01-27): same architecture, text encoder and VAE as Turbo.
# Comfy-Org's repackage (huggingface.co/Comfy-Org/z_image, split_files/diffusion_models/, 12.3 GB on the page;
# renamed there from z_image.safetensors to z_image_bf16.safetensors) and unsloth's GGUFs
# (huggingface.co/unsloth/Z-Image-GGUF; z-image-Q4_K_M.gguf is 5 066 995 776 bytes).
COMFY_ORG_BASE = f"{HF}/Comfy-Org/z_image/resolve/main/split_files"
DIT_BASE_BF16 = PublishedFile("z_image_bf16.safetensors", "diffusion_models",
                              f"{COMFY_ORG_BASE}/diffusion_models/z_image_bf16.safetensors", "12.3 GB",
                              "huggingface.co/Comfy-Org/z_image", "dit", "BF16")
DIT_BASE_Q4_K_M = PublishedFile("z-image-Q4_K_M.gguf", "diffusion_models",
                                f"{HF}/unsloth/Z-Image-GGUF/resolve/main/z-image-Q4_K_M.gguf", "5.07 GB",
                                "huggingface.co/unsloth/Z-Image-GGUF", "dit", "Q4_K")

# ------------------------------------------------------------------------------------------ LoRAs (issue 17)
# DiffSynth-Studio's Z-Image-Turbo DistillPatch: a Turbo LoRA (DiffSynth bare keys, models/loras) that keeps the
# 8-step behaviour for LoRAs trained on Turbo without an adapter; the LoRA workflow's default. No size on the page.
LORA_DISTILL_PATCH = PublishedFile("model.safetensors", "loras",
                                   f"{HF}/DiffSynth-Studio/Z-Image-Turbo-DistillPatch/resolve/main/model.safetensors",
                                   "", "huggingface.co/DiffSynth-Studio/Z-Image-Turbo-DistillPatch", "lora")

# Every published file, in the order `download --list` shows them. Add new rows here (see the module docstring).
CATALOG: tuple[PublishedFile, ...] = (
    DIT_BF16, TE_BF16, VAE,
    DIT_INT8_CONVROT, TE_FP8_MIXED,
    DIT_Q3_K_S, DIT_Q4_K_S, DIT_Q4_K_M, DIT_Q5_K_S, DIT_Q5_K_M, DIT_Q8_0,
    DIT_SDCPP_Q3_K, DIT_SDCPP_Q4_0, DIT_SDCPP_Q5_0, DIT_SDCPP_Q6_K,
    TE_Q4_K_M, TE_Q5_K_M, TE_Q6_K, TE_Q8_0,
    TE_INSTRUCT_Q4_K_M, TE_INSTRUCT_Q5_K_M, TE_INSTRUCT_Q6_K, TE_INSTRUCT_Q8_0,
    CN_UNION_2_1_8STEPS, CN_UNION_2_1_LITE, CN_UNION_2_1, CN_UNION_1_0,
    DIT_BASE_BF16, DIT_BASE_Q4_K_M,
    LORA_DISTILL_PATCH,
)


def by_name() -> dict[str, PublishedFile]:
    """{file name: row}; a name published twice (two folders) would be ambiguous, so names are unique."""
    out: dict[str, PublishedFile] = {}
    for f in CATALOG:
        if f.name in out:
            raise ValueError(f"catalog lists {f.name} twice")
        out[f.name] = f
    return out


def lookup(name: str) -> PublishedFile | None:
    return by_name().get(name)
