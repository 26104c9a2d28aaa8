"""Z-Image LoRA loading: every trainer's key layout onto the pack's MODEL (any DiT format) and CLIP, with a report.

Built on core's machinery: `comfy.lora.model_lora_keys_unet/clip` (key maps), `comfy.lora.load_lora` (weight
adapters: LoRA, DoRA, LoHa, LoKr, full diff) and `ModelPatcher.add_patches`. Added here: the names core's map
lacks (kohya/musubi `lora_unet_` with diffusers module names, `transformer.` and bare DiffSynth names on hosts
that have no Z-Image map for them), which file keys were used and which were not, and an error naming the
file and the model family when nothing matched. On quantized layers (GGUF: `quant.patcher`; fp8 plain or
scaled and `.comfy_quant`: `lora_side`) nothing is baked into the stored weights: plain LoRA patches run beside
the layer (the q/k/v slices of the fused qkv included), other patch kinds apply to the weight upcast for each use.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from .errors import ModelFileError
from .lora_side import attach_beside_quantized
from .lora_formats import describe_lora, foreign_family, is_text_encoder_key
from .safetensors_file import load_tensors, read_header

EXPECTED = "a Z-Image LoRA (keys naming the Z-Image DiT's layers.N / refiners, or the Qwen3 text encoder)"
DIT_PREFIX = "diffusion_model."
MAX_LISTED = 40


def _diffusers_aliases(name: str) -> tuple[str, ...]:
    """Every trainer's spelling of one diffusers-named module (`layers.0.attention.to_q`)."""
    return (f"lora_unet_{name.replace('.', '_')}", f"lycoris_{name.replace('.', '_')}", f"{DIT_PREFIX}{name}",
            f"transformer.{name}", name)


def dit_lora_key_map(model) -> dict:
    """LoRA module name → DiT weight key (or (key, (dim, start, length)) for a slice of the fused qkv)."""
    import comfy.lora
    import comfy.utils
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    diffusers = comfy.utils.z_image_to_diffusers(model.model.model_config.unet_config, output_prefix=DIT_PREFIX)
    for diffusers_key, target in diffusers.items():
        if diffusers_key.endswith(".weight"):
            for alias in _diffusers_aliases(diffusers_key[:-len(".weight")]):
                key_map.setdefault(alias, target)
    return key_map


# Text-encoder spellings of one Qwen3 module (`layers.0.self_attn.q_proj`): kohya, diffusers/PEFT (the
# pipeline's `text_encoder` is a Qwen3Model), HF causal-LM names.
TEXT_ENCODER_ALIASES = ("lora_te_{u}", "lora_te1_{u}", "text_encoder.{d}", "text_encoder.model.{d}")
ENCODER_MARKER = ".transformer.model."


def text_encoder_lora_key_map(clip) -> dict:
    """LoRA module name → text-encoder weight key: core's map plus the Qwen3 spellings it lacks on some hosts."""
    import comfy.lora
    key_map = comfy.lora.model_lora_keys_clip(clip.cond_stage_model, {})
    for key in clip.cond_stage_model.state_dict():
        if ENCODER_MARKER in key and key.endswith(".weight"):
            module = key.split(ENCODER_MARKER, 1)[1][:-len(".weight")]
            for alias in TEXT_ENCODER_ALIASES:
                key_map.setdefault(alias.format(u=module.replace(".", "_"), d=module), key)
    return key_map


class _UsedKeys(dict):
    """A state dict that remembers which of its keys core's loader read."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.used: set[str] = set()

    def __getitem__(self, key):
        value = super().__getitem__(key)
        self.used.add(key)
        return value

    def get(self, key, default=None):
        if key in self:
            return self[key]
        return default


@dataclass
class LoraReport:
    """What a LoRA file held and what of it was applied."""

    file: str
    layout: str
    adapters: tuple[str, ...]
    dit_patched: list[str] = field(default_factory=list)
    text_encoder_patched: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    text_encoder_skipped: list[str] = field(default_factory=list)
    shape_mismatch: list[str] = field(default_factory=list)

    def text(self) -> str:
        lines = [f"{self.file}: {self.layout}, {' + '.join(self.adapters) or 'no known adapter tensors'}",
                 f"DiT: {len(self.dit_patched)} weights patched",
                 f"text encoder: {len(self.text_encoder_patched)} weights patched"]
        if self.text_encoder_skipped:
            lines.append(f"text encoder: {len(self.text_encoder_skipped)} keys skipped (no CLIP connected)")
        for title, keys in (("not applied (shape differs from this model)", self.shape_mismatch),
                            ("not matched", self.unmatched)):
            if keys:
                lines.append(f"{title}: {len(keys)} keys")
                lines += [f"  {k}" for k in keys[:MAX_LISTED]]
                if len(keys) > MAX_LISTED:
                    lines.append(f"  … and {len(keys) - MAX_LISTED} more")
        return "\n".join(lines)


def _target(patch_key) -> str:
    return patch_key if isinstance(patch_key, str) else patch_key[0]


def _target_shape(patch_key, weight_shape: tuple[int, ...]) -> tuple[int, ...]:
    if isinstance(patch_key, str) or len(patch_key) < 2 or patch_key[1] is None:
        return weight_shape
    dim, _, length = patch_key[1]
    return weight_shape[:dim] + (length,) + weight_shape[dim + 1:]


def _adapter_fits(adapter, shape: tuple[int, ...]) -> bool:
    """Whether a LoRA / diff adapter's delta has the target's shape (other adapters are checked by core)."""
    name = getattr(adapter, "name", adapter[0] if isinstance(adapter, tuple) else None)
    weights = getattr(adapter, "weights", adapter[1] if isinstance(adapter, tuple) else None)
    if name == "lora" and weights[0].ndim == 2 and weights[1].ndim == 2 and weights[5] is None:
        return len(shape) == 2 and (weights[0].shape[0], weights[1].shape[1]) == shape
    if name == "diff":
        return tuple(weights[0].shape) == shape
    return True


def _model_shapes(module: torch.nn.Module, prefix: str = "") -> dict[str, tuple[int, ...]]:
    """{name: shape} of the module's weights as its layers compute with them: the tensors themselves, not their
    state dict (which stores a quantized weight as packed data, e.g. nvfp4 [rows, columns / 2])."""
    tensors = [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]
    return {prefix + k: tuple(getattr(v, "logical_shape", v.shape)) for k, v in tensors}


def _split_fitting(patches: dict, shapes: dict[str, tuple[int, ...]]) -> tuple[dict, dict]:
    """(patches whose target is in `shapes` and fits it, those whose target is there but has another shape)."""
    fitting, misfit = {}, {}
    for key, adapter in patches.items():
        target = _target(key)
        if target in shapes:
            fits = _adapter_fits(adapter, _target_shape(key, shapes[target]))
            (fitting if fits else misfit)[key] = adapter
    return fitting, misfit


def _absent(patches: dict, *shape_maps: dict) -> dict:
    """Patches whose target weight neither model has (e.g. adaLN of a refiner built without it)."""
    return {k: v for k, v in patches.items() if not any(_target(k) in shapes for shapes in shape_maps)}


def _keys_of(patches: dict, lora_sd: _UsedKeys, reverse: dict) -> list[str]:
    """The file keys behind some patches (by their LoRA module name)."""
    names = {reverse[k] for k in patches if k in reverse}
    return sorted(k for k in lora_sd if any(k.rsplit(".", n)[0] in names for n in range(1, k.count(".") + 1)))


def apply_zimage_lora(model, clip, lora_sd: dict[str, torch.Tensor], strength_model: float,
                      strength_clip: float = 1.0, path: str | os.PathLike = "<LoRA>"):
    """(model, clip, report): clones of `model` / `clip` with the LoRA's patches; inputs are not changed.

    Raises ModelFileError when not a single key of the file applies to the model or the text encoder.
    """
    import comfy.lora
    description = describe_lora(lora_sd)
    report = LoraReport(os.path.basename(os.fspath(path)), description.layout, description.adapters)
    dit_map = dit_lora_key_map(model) if model is not None else {}
    te_map = text_encoder_lora_key_map(clip) if clip is not None else {}
    recorder = _UsedKeys(lora_sd)
    key_map = {**te_map, **dit_map}
    patches = comfy.lora.load_lora(recorder, key_map, log_missing=False)
    names_in_file = {k.rsplit(".", n)[0] for k in lora_sd for n in range(1, k.count(".") + 1)}
    reverse = {target: name for name, target in key_map.items() if name in names_in_file}

    new_model, new_clip = model, clip
    dit_shapes = _model_shapes(model.model) if model is not None else {}
    te_shapes = _model_shapes(clip.cond_stage_model) if clip is not None else {}
    dropped = set(_keys_of(_absent(patches, dit_shapes, te_shapes), recorder, reverse))
    if model is not None:
        dit_patches, misfit = _split_fitting(patches, dit_shapes)
        report.shape_mismatch += _keys_of(misfit, recorder, reverse)
        new_model = model.clone()
        dit_patches, beside = attach_beside_quantized(new_model, dit_patches, strength_model)
        added = new_model.add_patches(dit_patches, strength_model)
        report.dit_patched = sorted({_target(k) for k in added} | set(beside))
    if clip is not None:
        te_patches, misfit = _split_fitting(patches, te_shapes)
        report.shape_mismatch += _keys_of(misfit, recorder, reverse)
        new_clip = clip.clone()
        te_patches, beside = attach_beside_quantized(new_clip.patcher, te_patches, strength_clip)
        added = new_clip.add_patches(te_patches, strength_clip)
        report.text_encoder_patched = sorted({_target(k) for k in added} | set(beside))
    mismatched = set(report.shape_mismatch)
    unused = [k for k in lora_sd if (k not in recorder.used or k in dropped) and k not in mismatched]
    if clip is None:
        report.text_encoder_skipped = [k for k in unused if is_text_encoder_key(k)]
    skipped = set(report.text_encoder_skipped)
    report.unmatched = sorted(k for k in unused if k not in skipped)
    if not report.dit_patched and not report.text_encoder_patched:
        raise ModelFileError(path, EXPECTED, _what_it_looks_like(lora_sd, report), _zero_match_hint(report))
    return new_model, new_clip, report


def _what_it_looks_like(lora_sd: dict, report: LoraReport) -> str:
    dit_keys = [k for k in lora_sd if not is_text_encoder_key(k)]
    family = foreign_family(dit_keys)
    if family:
        return family
    if report.shape_mismatch:
        return (f"a LoRA in the {report.layout} layout whose shapes do not fit this model "
                f"(e.g. {report.shape_mismatch[0]}): a LoRA for another Z-Image size or for Lumina 2")
    example = ", ".join(sorted(lora_sd)[:3]) or "no tensors"
    return f"no key this model has ({report.layout}; e.g. {example})"


def _zero_match_hint(report: LoraReport) -> str:
    if report.text_encoder_skipped and not report.unmatched:
        return "It only patches the text encoder: connect the CLIP input."
    return "Nothing was applied. Use a LoRA trained for Z-Image (Turbo or Base)."


def read_lora_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A LoRA's tensors from a .safetensors file (never pickle); ModelFileError for a broken file."""
    header = read_header(path, expected=EXPECTED)
    return load_tensors(header)


def load_zimage_lora(model, clip, path: str | os.PathLike, strength_model: float, strength_clip: float = 1.0):
    """Read a LoRA file and apply it to `model` (and `clip` when given): (model, clip, report)."""
    return apply_zimage_lora(model, clip, read_lora_file(path), strength_model, strength_clip, path)
