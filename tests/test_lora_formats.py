"""ZImageLoraLoader: every trainer's key layout, on bf16, GGUF and fp8 DiTs, against a dense reference.

The LoRA writers below build each trainer's file from its published key layout (see the table in
`loaders/lora_formats.py`); they never use the pack's mapping code. The reference applies W + s·(B·A)
(or the LoHa / LoKr / diff delta) to the weights in the test and builds a dense model from them.
"""
from __future__ import annotations

import pytest
import torch

from zimage_turbo.fixtures.shapes import TINY_DIT
from zimage_turbo.quant.convert import convert_to_gguf

D = TINY_DIT.dim
RANK = 4


# (diffusers module name as trainers write it, ComfyUI weight key, row slice of that weight or None)
DIFFUSERS_TARGETS = (
    ("layers.0.attention.to_q", "layers.0.attention.qkv.weight", (0, D)),
    ("layers.0.attention.to_v", "layers.0.attention.qkv.weight", (2 * D, D)),
    ("layers.1.attention.to_k", "layers.1.attention.qkv.weight", (D, D)),
    ("layers.1.attention.to_out.0", "layers.1.attention.out.weight", None),
    ("layers.0.feed_forward.w2", "layers.0.feed_forward.w2.weight", None),
    ("layers.1.adaLN_modulation.0", "layers.1.adaLN_modulation.0.weight", None),
    ("noise_refiner.0.attention.to_q", "noise_refiner.0.attention.qkv.weight", (0, D)),
    ("context_refiner.1.feed_forward.w1", "context_refiner.1.feed_forward.w1.weight", None),
    ("all_x_embedder.2-1", "x_embedder.weight", None),
    ("all_final_layer.2-1.linear", "final_layer.linear.weight", None),
    ("t_embedder.mlp.2", "t_embedder.mlp.2.weight", None),
    ("cap_embedder.1", "cap_embedder.1.weight", None),
)
# ComfyUI's own names (fused qkv)
COMFY_TARGETS = (
    ("layers.0.attention.qkv", "layers.0.attention.qkv.weight", None),
    ("layers.1.attention.out", "layers.1.attention.out.weight", None),
    ("noise_refiner.1.feed_forward.w3", "noise_refiner.1.feed_forward.w3.weight", None),
    ("final_layer.adaLN_modulation.1", "final_layer.adaLN_modulation.1.weight", None),
)


def _kohya(name: str) -> str:
    return "lora_unet_" + name.replace(".", "_")


# format → (module-name function, targets, tensor-name style)
FORMATS = {
    "comfyui": (lambda n: f"diffusion_model.{n}", COMFY_TARGETS, "up_down"),
    "ai_toolkit": (lambda n: f"diffusion_model.{n}", DIFFUSERS_TARGETS, "peft"),
    "diffusers_peft": (lambda n: f"transformer.{n}", DIFFUSERS_TARGETS, "peft"),
    "diffsynth": (lambda n: n, DIFFUSERS_TARGETS, "peft"),
    "musubi_kohya": (_kohya, DIFFUSERS_TARGETS, "up_down"),
}


def _shape(sd: dict, key: str, rows) -> tuple[int, int]:
    out_f, in_f = sd[key].shape
    return (rows[1] if rows else out_f), in_f


def write_lora(fmt: str, dit_sd: dict, seed: int = 0, with_alpha: bool = True):
    """(file tensors, [(comfy key, rows, dense delta at strength 1)]) in the given trainer's layout."""
    name_of, targets, style = FORMATS[fmt]
    g = torch.Generator().manual_seed(seed)
    lora, deltas = {}, []
    for module, key, rows in targets:
        out_f, in_f = _shape(dit_sd, key, rows)
        down = torch.randn(RANK, in_f, generator=g) * 0.1
        up = torch.randn(out_f, RANK, generator=g) * 0.1
        name = name_of(module)
        scale = 1.0
        if style == "peft":
            lora[f"{name}.lora_A.weight"], lora[f"{name}.lora_B.weight"] = down, up
        else:
            lora[f"{name}.lora_down.weight"], lora[f"{name}.lora_up.weight"] = down, up
            if with_alpha:
                lora[f"{name}.alpha"] = torch.tensor(RANK / 2.0)
                scale = 0.5
        deltas.append((key, rows, scale * (up @ down)))
    return lora, deltas


def write_loha(dit_sd: dict, seed: int = 1):
    """LyCORIS LoHa in kohya names: ΔW = (w1_a·w1_b) ⊙ (w2_a·w2_b) · alpha/rank."""
    g = torch.Generator().manual_seed(seed)
    lora, deltas = {}, []
    for module, key, rows in DIFFUSERS_TARGETS[:6]:
        out_f, in_f = _shape(dit_sd, key, rows)
        w1a, w1b = torch.randn(out_f, RANK, generator=g) * 0.3, torch.randn(RANK, in_f, generator=g) * 0.3
        w2a, w2b = torch.randn(out_f, RANK, generator=g) * 0.3, torch.randn(RANK, in_f, generator=g) * 0.3
        name = _kohya(module)
        lora.update({f"{name}.hada_w1_a": w1a, f"{name}.hada_w1_b": w1b, f"{name}.hada_w2_a": w2a,
                     f"{name}.hada_w2_b": w2b, f"{name}.alpha": torch.tensor(float(RANK))})
        deltas.append((key, rows, (w1a @ w1b) * (w2a @ w2b)))
    return lora, deltas


def write_lokr(dit_sd: dict, seed: int = 2):
    """LyCORIS LoKr (full w1, w2): ΔW = kron(w1, w2) (no alpha scaling without low-rank factors)."""
    g = torch.Generator().manual_seed(seed)
    lora, deltas = {}, []
    for module, key, rows in DIFFUSERS_TARGETS[:6]:
        out_f, in_f = _shape(dit_sd, key, rows)
        w1 = torch.randn(4, 4, generator=g) * 0.1
        w2 = torch.randn(out_f // 4, in_f // 4, generator=g) * 0.1
        name = f"lycoris_{module.replace('.', '_')}"
        lora.update({f"{name}.lokr_w1": w1, f"{name}.lokr_w2": w2})
        deltas.append((key, rows, torch.kron(w1, w2)))
    return lora, deltas


def write_full_diff(dit_sd: dict, seed: int = 3):
    """A full difference in ComfyUI names (`.diff`, `.diff_b`)."""
    g = torch.Generator().manual_seed(seed)
    lora, deltas = {}, []
    for module, key, _ in COMFY_TARGETS:
        diff = torch.randn(*dit_sd[key].shape, generator=g) * 0.01
        lora[f"diffusion_model.{module}.diff"] = diff
        deltas.append((key, None, diff))
    return lora, deltas


def write_dora(dit_sd: dict, seed: int = 4):
    """kohya-named LoRA with `dora_scale`: W' = m · (W + ΔW) / ‖W + ΔW‖ with the norm over each input column
    (the DoRA paper's layout, LyCORIS `wd_on_out=False`: one magnitude per input feature, shape (1, in))."""
    lora, deltas = write_lora("musubi_kohya", dit_sd, seed)
    g = torch.Generator().manual_seed(seed + 100)
    full = [(m, key, delta) for (m, key, rows), (_, _, delta) in zip(DIFFUSERS_TARGETS, deltas) if rows is None]
    keep = {_kohya(m) for m, _, _ in full}  # DoRA normalises the whole weight: full-weight targets only
    lora = {k: v for k, v in lora.items() if k.split(".")[0] in keep}
    dora_deltas = []
    for module, key, delta in full:
        w = dit_sd[key].float()
        magnitude = 1.0 + 0.1 * torch.randn(1, w.shape[1], generator=g)
        lora[f"{_kohya(module)}.dora_scale"] = magnitude
        merged = w + delta
        norm = merged.norm(dim=0, keepdim=True) + torch.finfo(torch.float32).eps
        dora_deltas.append((key, None, merged * (magnitude / norm) - w))
    return lora, dora_deltas


def reference_state_dict(dit_sd: dict, deltas, strength: float) -> dict:
    """W + strength·ΔW for each target (rows of a fused weight where the LoRA names a slice)."""
    sd = {k: v.float().clone() for k, v in dit_sd.items()}
    for key, rows, delta in deltas:
        if rows is None:
            sd[key] += strength * delta
        else:
            sd[key][rows[0]:rows[0] + rows[1]] += strength * delta
    return sd


def _inputs():
    g = torch.Generator().manual_seed(11)
    return torch.randn(1, 16, 8, 8, generator=g), torch.randn(1, 12, TINY_DIT.cap_feat_dim, generator=g)


def forward(model) -> torch.Tensor:
    import comfy.model_management as mm
    x, context = _inputs()
    mm.load_models_gpu([model])
    try:
        return model.model.apply_model(x, torch.tensor([0.6]), c_crossattn=context, num_tokens=12).float()
    finally:
        mm.unload_all_models()


@pytest.fixture(scope="module")
def dit_sd(comfy_host, tiny_paths):
    from safetensors.torch import load_file
    return load_file(str(tiny_paths["diffusion_models"]))


@pytest.fixture(scope="module")
def fp32_model(comfy_host, tiny_paths):
    from zimage_turbo.loaders.dit import load_zimage_dit
    return load_zimage_dit(tiny_paths["diffusion_models"], "fp32")


def _dense_model(sd: dict):
    from zimage_turbo.loaders.dit import build_zimage_model
    return build_zimage_model(sd, weight_dtype="fp32")


def _apply(model, lora, strength=1.0, clip=None):
    from zimage_turbo.loaders.lora import apply_zimage_lora
    return apply_zimage_lora(model, clip, lora, strength, 1.0, "test_lora.safetensors")


WRITERS = {
    **{fmt: (lambda fmt: lambda sd: write_lora(fmt, sd))(fmt) for fmt in FORMATS},
    "kohya_no_alpha": lambda sd: write_lora("musubi_kohya", sd, seed=5, with_alpha=False),
    "loha": write_loha,
    "lokr": write_lokr,
    "full_diff": write_full_diff,
    "dora": write_dora,
}


# what the report must call each file (format detected from the keys alone)
EXPECTED_LAYOUT = {"comfyui": "ComfyUI", "ai_toolkit": "ai-toolkit", "diffusers_peft": "diffusers / PEFT",
                   "diffsynth": "DiffSynth", "musubi_kohya": "musubi-tuner", "kohya_no_alpha": "musubi-tuner",
                   "loha": "musubi-tuner", "lokr": "LyCORIS", "full_diff": "ComfyUI", "dora": "musubi-tuner"}
EXPECTED_ADAPTERS = {"loha": ("LoHa",), "lokr": ("LoKr",), "full_diff": ("full diff",), "dora": ("LoRA", "DoRA")}


@pytest.mark.parametrize("fmt", list(WRITERS))
@pytest.mark.parametrize("strength", [1.0, -0.7, 1.8])
def test_each_format_equals_dense_reference_on_bf16_weights(fmt, strength, dit_sd, fp32_model):
    lora, deltas = WRITERS[fmt](dit_sd)
    patched, _, report = _apply(fp32_model, lora, strength)
    assert report.unmatched == [] and report.shape_mismatch == []
    assert len(report.dit_patched) == len({key for key, _, _ in deltas})
    assert EXPECTED_LAYOUT[fmt] in report.layout and report.adapters == EXPECTED_ADAPTERS.get(fmt, ("LoRA",))
    reference = forward(_dense_model(reference_state_dict(dit_sd, deltas, strength)))
    out = forward(patched)
    assert float((forward(fp32_model) - reference).abs().max()) > 1e-3, "the LoRA must change the output"
    assert float((out - reference).abs().max()) <= 1e-5


def _core_reads(model, lora: dict) -> bool:
    """Whether this host's own key map names every module of the file (then core's LoRA loader reads it)."""
    import comfy.lora
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    modules = {k.rsplit(".", 2 if k.endswith(".weight") else 1)[0] for k in lora}
    return all(m in key_map for m in modules)


@pytest.mark.parametrize("fmt", ["comfyui", "ai_toolkit", "diffusers_peft", "diffsynth", "loha", "lokr",
                                 "full_diff"])
def test_same_as_core_lora_loader_where_core_reads_the_format(fmt, dit_sd, fp32_model, comfy_host):
    lora, _ = WRITERS[fmt](dit_sd)
    if not _core_reads(fp32_model, lora):
        pytest.skip(f"ComfyUI {comfy_host['version']} does not read the {fmt} layout")
    core, _ = comfy_host["sd"].load_lora_for_models(fp32_model, None, lora, 0.9, 0)  # LoraLoaderModelOnly's call
    ours, _, _ = _apply(fp32_model, lora, 0.9)
    assert torch.equal(forward(core), forward(ours))


def test_musubi_format_is_not_read_by_core_but_is_by_the_pack(dit_sd, fp32_model, comfy_host):
    """The reason for the pack's loader: core drops musubi-tuner's default names ("lora key not loaded")."""
    lora, deltas = write_lora("musubi_kohya", dit_sd)
    core, _ = comfy_host["sd"].load_lora_for_models(fp32_model, None, lora, 1.0, 0)
    base = forward(fp32_model)
    patched_keys = {k for k in core.patches}
    assert "diffusion_model.layers.0.attention.qkv.weight" not in patched_keys
    ours, _, report = _apply(fp32_model, lora)
    assert "diffusion_model.layers.0.attention.qkv.weight" in report.dit_patched
    assert float((forward(ours) - base).abs().max()) > 1e-3


def test_stacked_loras_add_up(dit_sd, fp32_model):
    first, d1 = write_lora("ai_toolkit", dit_sd, seed=10)
    second, d2 = write_lora("musubi_kohya", dit_sd, seed=11)
    third, d3 = write_loha(dit_sd, seed=12)
    model = fp32_model
    for lora, strength in ((first, 0.6), (second, -1.2), (third, 0.8)):
        model, _, _ = _apply(model, lora, strength)
    sd = reference_state_dict(dit_sd, d1, 0.6)
    sd = reference_state_dict(sd, d2, -1.2)
    sd = reference_state_dict(sd, d3, 0.8)
    assert float((forward(model) - forward(_dense_model(sd))).abs().max()) <= 1e-5


def test_report_names_every_unmatched_key(dit_sd, fp32_model):
    lora, _ = write_lora("musubi_kohya", dit_sd)
    lora["lora_unet_layers_7_attention_to_q.lora_down.weight"] = torch.zeros(RANK, D)  # no layer 7 here
    lora["lora_unet_layers_7_attention_to_q.lora_up.weight"] = torch.zeros(D, RANK)
    lora["some_other_tensor"] = torch.zeros(3)
    lora["lora_te_layers_0_self_attn_q_proj.lora_down.weight"] = torch.zeros(RANK, 256)
    # the context refiner has no adaLN in Z-Image: a name core's map knows, for a weight the model lacks
    lora["lora_unet_context_refiner_0_adaLN_modulation_0.lora_down.weight"] = torch.zeros(RANK, 256)
    lora["lora_unet_context_refiner_0_adaLN_modulation_0.lora_up.weight"] = torch.zeros(4 * D, RANK)
    _, _, report = _apply(fp32_model, lora)
    assert report.unmatched == ["lora_unet_context_refiner_0_adaLN_modulation_0.lora_down.weight",
                                "lora_unet_context_refiner_0_adaLN_modulation_0.lora_up.weight",
                                "lora_unet_layers_7_attention_to_q.lora_down.weight",
                                "lora_unet_layers_7_attention_to_q.lora_up.weight", "some_other_tensor"]
    assert report.text_encoder_skipped == ["lora_te_layers_0_self_attn_q_proj.lora_down.weight"]
    text = report.text()
    assert "kohya / musubi-tuner" in text and f"DiT: {len(report.dit_patched)} weights patched" in text
    assert "lora_unet_layers_7_attention_to_q.lora_up.weight" in text and "some_other_tensor" in text


FOREIGN = {
    "flux": ({"diffusion_model.double_blocks.0.img_attn.qkv.lora_up.weight": torch.zeros(9, 2),
              "diffusion_model.double_blocks.0.img_attn.qkv.lora_down.weight": torch.zeros(2, 3)}, "Flux"),
    "sdxl": ({"lora_unet_input_blocks_4_1_proj_in.lora_up.weight": torch.zeros(9, 2)}, "SDXL"),
    "qwen_image": ({"transformer_blocks.0.img_mod.1.lora_A.weight": torch.zeros(2, 3)}, "Qwen-Image"),
}


@pytest.mark.parametrize("family", list(FOREIGN))
def test_zero_matched_keys_is_an_error_naming_file_and_family(family, fp32_model):
    from zimage_turbo.loaders.errors import ModelFileError
    lora, name = FOREIGN[family]
    with pytest.raises(ModelFileError, match=rf"test_lora\.safetensors: expected a Z-Image LoRA.*{name}"):
        _apply(fp32_model, lora)


def test_wrong_size_lora_is_reported_as_shape_mismatch(fp32_model):
    from zimage_turbo.loaders.errors import ModelFileError
    lora = {"diffusion_model.layers.0.attention.qkv.lora_up.weight": torch.zeros(3 * 3840, 4),
            "diffusion_model.layers.0.attention.qkv.lora_down.weight": torch.zeros(4, 3840)}
    with pytest.raises(ModelFileError, match="shapes do not fit"):
        _apply(fp32_model, lora)


# ---------------------------------------------------------------- quantized DiTs: the LoRA runs beside the layer

@pytest.fixture(scope="module", params=["Q8_0", "Q4_K"])
def gguf_model(request, comfy_host, tiny_paths, tmp_path_factory):
    from zimage_turbo.loaders.dit import load_zimage_dit
    path = tmp_path_factory.mktemp("lora_gguf") / f"dit-{request.param}.gguf"
    convert_to_gguf(tiny_paths["diffusion_models"], path, request.param)
    return load_zimage_dit(path)


def assert_matches_reference(out, reference, base) -> None:
    """GGUF DiTs compute in the device's dtype (bf16 on the CPU): equal to the fp32 reference within bf16
    rounding, while the LoRA's own effect is many times larger than that tolerance."""
    tolerance = 8e-3 * float(reference.abs().max())
    assert float((out - reference).abs().max()) <= tolerance
    assert float((base - reference).abs().max()) >= 5 * tolerance, "the LoRA must change the output"


def _dequantized_sd(model) -> dict:
    sd = {}
    for key, value in model.model.diffusion_model.state_dict().items():
        sd[key] = value.dequantize(torch.float32) if hasattr(value, "quant_type") else value.float()
    return sd


def _stored_weights(model, deltas):
    return {key: model.model.diffusion_model.get_submodule(key.rsplit(".", 1)[0]).weight for key, _, _ in deltas}


@pytest.mark.parametrize("fmt", ["musubi_kohya", "ai_toolkit", "comfyui", "loha", "full_diff"])
def test_gguf_lora_equals_dequantized_forward_plus_delta(fmt, gguf_model, dit_sd):
    from zimage_turbo.quant.tensor import QuantizedTensor
    lora, deltas = WRITERS[fmt](dit_sd)
    before = _stored_weights(gguf_model, deltas)
    patched, _, report = _apply(gguf_model, lora, 0.9)
    assert report.unmatched == []
    reference = forward(_dense_model(reference_state_dict(_dequantized_sd(gguf_model), deltas, 0.9)))
    assert_matches_reference(forward(patched), reference, forward(gguf_model))
    after = _stored_weights(patched, deltas)
    quantized = [key for key, weight in before.items() if isinstance(weight, QuantizedTensor)]
    assert len(quantized) >= len(before) // 2, "most LoRA'd layers of the GGUF are quantized (embedders stay BF16)"
    for key in quantized:
        assert after[key] is before[key] and isinstance(after[key], QuantizedTensor), f"{key} must stay quantized"


def test_gguf_qkv_slice_lora_is_a_side_computation(gguf_model, dit_sd, monkeypatch):
    import comfy.lora
    from zimage_turbo.quant.tensor import QuantizedTensor
    import comfy.model_management as mm
    lora, _ = write_lora("musubi_kohya", dit_sd)
    patched, _, _ = _apply(gguf_model, lora, 1.0)
    seen: list[str] = []
    original = comfy.lora.calculate_weight
    monkeypatch.setattr(comfy.lora, "calculate_weight",
                        lambda patches, weight, key, *a, **k: seen.append(key) or original(patches, weight, key, *a, **k))
    mm.load_models_gpu([patched])
    try:
        qkv = patched.model.diffusion_model.get_submodule("layers.0.attention.qkv")
        assert sorted(side.rows for side in qkv.lora_side) == [(0, D), (2 * D, D)]
        quantized = {k for k, v in patched.model.state_dict().items() if isinstance(v, QuantizedTensor)}
        assert "diffusion_model.layers.0.attention.qkv.weight" in quantized
        assert not [k for k in seen if k in quantized], "no dense delta for quantized weights"
    finally:
        mm.unload_all_models()


# ---------------------------------------------------------------- core's node and low-VRAM partial loading

def test_core_lora_loader_model_only_still_works_on_the_pack_model(gguf_model, dit_sd, comfy_host):
    lora, deltas = write_lora("comfyui", dit_sd)
    core, _ = comfy_host["sd"].load_lora_for_models(gguf_model, None, lora, 1.0, 0)
    reference = forward(_dense_model(reference_state_dict(_dequantized_sd(gguf_model), deltas, 1.0)))
    assert_matches_reference(forward(core), reference, forward(gguf_model))




def test_partially_loaded_gguf_with_slice_loras_equals_fully_loaded(gguf_model, dit_sd):
    """ComfyUI's low-VRAM partial loading (layers cast per use) gives the same output with q/k/v slice LoRAs."""
    import comfy.model_management as mm
    patched, _, _ = _apply(gguf_model, write_lora("musubi_kohya", dit_sd, seed=21)[0], 0.8)
    x, context = _inputs()
    cpu = torch.device("cpu")

    def run():
        return patched.model.apply_model(x, torch.tensor([0.6]), c_crossattn=context, num_tokens=12)
    mm.unload_all_models()
    patched.load(cpu, lowvram_model_memory=0, full_load=True)
    full = run()
    patched.unpatch_model(cpu)
    patched.load(cpu, lowvram_model_memory=max(1, patched.model_size() // 3), full_load=False)
    try:
        assert patched.model.model_lowvram
        assert torch.equal(run(), full)
    finally:
        patched.unpatch_model(cpu)


# ---------------------------------------------------------------- the text-encoder part of a LoRA

TE_TARGETS = ("layers.0.self_attn.q_proj", "layers.1.mlp.down_proj", "layers.2.self_attn.o_proj")
PROMPT = "a red fox in the snow"


def write_text_encoder_lora(hf_sd: dict, seed: int = 20):
    """kohya names for the Qwen3 encoder (`lora_te_layers_0_self_attn_q_proj`), in HF module paths."""
    g = torch.Generator().manual_seed(seed)
    lora, deltas = {}, []
    for module in TE_TARGETS:
        key = f"model.{module}.weight"
        out_f, in_f = hf_sd[key].shape
        down, up = torch.randn(RANK, in_f, generator=g) * 0.2, torch.randn(out_f, RANK, generator=g) * 0.2
        name = "lora_te_" + module.replace(".", "_")
        lora.update({f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up,
                     f"{name}.alpha": torch.tensor(float(RANK))})
        deltas.append((key, None, up @ down))
    return lora, deltas


def _encode(clip) -> torch.Tensor:
    return clip.encode_from_tokens_scheduled(clip.tokenize(PROMPT))[0][0].float()


def test_text_encoder_part_applies_to_the_clip(comfy_host, dit_sd, fp32_model):
    from zimage_turbo.fixtures.tiny_models import build_qwen3_state_dict
    from zimage_turbo.loaders.text_encoder import build_qwen3_clip
    hf_sd = {k: v.float() for k, v in build_qwen3_state_dict().items()}
    clip = build_qwen3_clip(dict(hf_sd))
    te_lora, te_deltas = write_text_encoder_lora(hf_sd)
    dit_lora, _ = write_lora("musubi_kohya", dit_sd)
    _, new_clip, report = _apply(fp32_model, {**dit_lora, **te_lora}, 1.0, clip=clip)
    assert len(report.text_encoder_patched) == len(TE_TARGETS) and report.unmatched == []
    reference = _encode(build_qwen3_clip(reference_state_dict(hf_sd, te_deltas, 1.0)))
    base, out = _encode(clip), _encode(new_clip)
    assert float((base - reference).abs().max()) > 1e-3
    assert float((out - reference).abs().max()) <= 1e-4 * max(1.0, float(reference.abs().max()))
    # without a CLIP the same keys are reported as skipped, not silently dropped
    _, none_clip, report = _apply(fp32_model, {**dit_lora, **te_lora}, 1.0)
    assert none_clip is None and len(report.text_encoder_skipped) == 3 * len(TE_TARGETS)
    assert "no CLIP connected" in report.text()


def test_text_encoder_part_on_a_gguf_clip_stays_quantized(comfy_host, tmp_path, dit_sd, fp32_model):
    from zimage_turbo.fixtures.tiny_models import qwen3_gguf_tensors, write_qwen3_gguf
    from zimage_turbo.fixtures.shapes import TINY_QWEN3
    from zimage_turbo.loaders.keymaps import llama_cpp_to_hf
    from zimage_turbo.loaders.text_encoder import build_qwen3_clip, load_qwen3_text_encoder
    from zimage_turbo.quant.tensor import QuantizedTensor
    tensors = qwen3_gguf_tensors(TINY_QWEN3, "Q8_0", seed=3)
    clip = load_qwen3_text_encoder(write_qwen3_gguf(tmp_path / "te-q8.gguf", TINY_QWEN3, "Q8_0", tensors=tensors))
    dense = {}
    for name, t in tensors.items():
        dense[llama_cpp_to_hf(name)] = (t.dequantize(torch.float32) if isinstance(t, QuantizedTensor)
                                        else t[0].float())
    te_lora, te_deltas = write_text_encoder_lora(dense)
    _, new_clip, report = _apply(fp32_model, te_lora, 1.0, clip=clip)
    assert len(report.text_encoder_patched) == len(TE_TARGETS)
    reference = _encode(build_qwen3_clip(reference_state_dict(dense, te_deltas, 1.0)))
    out = _encode(new_clip)
    assert float((out - reference).abs().max()) <= 2e-3 * max(1.0, float(reference.abs().max()))
    q_proj = new_clip.cond_stage_model.qwen3_4b.transformer.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj.weight, QuantizedTensor)


# ---------------------------------------------------------------- the node

@pytest.fixture()
def loras_dir(comfy_host, tmp_path):
    import folder_paths
    folder_paths.add_model_folder_path("loras", str(tmp_path))
    getattr(folder_paths, "filename_list_cache", {}).pop("loras", None)
    yield tmp_path
    folder_paths.folder_names_and_paths["loras"][0].remove(str(tmp_path))
    getattr(folder_paths, "filename_list_cache", {}).pop("loras", None)


def test_node_applies_and_reports(loras_dir, dit_sd, fp32_model):
    from safetensors.torch import save_file
    from zimage_turbo.nodes.lora import ZImageLoraLoader
    lora, deltas = write_lora("ai_toolkit", dit_sd)
    lora["diffusion_model.layers.9.attention.to_q.lora_A.weight"] = torch.zeros(RANK, D)
    save_file(lora, str(loras_dir / "my_zit_lora.safetensors"))
    assert "my_zit_lora.safetensors" in ZImageLoraLoader.INPUT_TYPES()["required"]["lora_name"][0]
    out = ZImageLoraLoader().load(fp32_model, "my_zit_lora.safetensors", 1.0)
    model, clip, text = out["result"]
    assert clip is None and out["ui"]["text"] == [text]
    assert "ai-toolkit" in text and "diffusion_model.layers.9.attention.to_q.lora_A.weight" in text
    reference = forward(_dense_model(reference_state_dict(dit_sd, deltas, 1.0)))
    assert float((forward(model) - reference).abs().max()) <= 1e-5


def test_node_refuses_a_pickle_renamed_safetensors(loras_dir, fp32_model):
    import pickle
    from zimage_turbo.loaders.errors import ModelFileError
    from zimage_turbo.nodes.lora import ZImageLoraLoader
    (loras_dir / "evil.safetensors").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ModelFileError, match="evil.safetensors"):
        ZImageLoraLoader().load(fp32_model, "evil.safetensors", 1.0)


# ---------------------------------------------------------------- fp8 DiT: the LoRA runs beside the fp8 layer

@pytest.fixture(scope="module")
def fp8_model(comfy_host, tiny_paths):
    from zimage_turbo.loaders.dit import load_zimage_dit
    return load_zimage_dit(tiny_paths["diffusion_models"], "fp8_e4m3fn")


@pytest.mark.parametrize("fmt", ["musubi_kohya", "ai_toolkit", "comfyui"])
def test_fp8_lora_equals_fp8_weights_plus_delta_and_keeps_fp8_storage(fmt, fp8_model, dit_sd):
    lora, deltas = WRITERS[fmt](dit_sd)
    fp8_weights = {k: v.float() for k, v in fp8_model.model.diffusion_model.state_dict().items()}
    patched, _, report = _apply(fp8_model, lora, 1.3)
    assert report.unmatched == [] and len(report.dit_patched) == len({k for k, _, _ in deltas})
    stored_fp8 = [k for k, v in fp8_model.model.diffusion_model.state_dict().items() if v.dtype == torch.float8_e4m3fn]
    assert {k for k, _, _ in deltas} <= set(stored_fp8)
    reference = forward(_dense_model(reference_state_dict(fp8_weights, deltas, 1.3)))
    import comfy.model_management as mm
    x, context = _inputs()
    mm.load_models_gpu([patched])
    try:
        out = patched.model.apply_model(x, torch.tensor([0.6]), c_crossattn=context, num_tokens=12).float()
        for key, _, _ in deltas:  # loaded and patched, the weights are still the fp8 tensors of the file
            weight = patched.model.diffusion_model.get_submodule(key.rsplit(".", 1)[0]).weight
            assert weight.dtype == torch.float8_e4m3fn
            assert torch.equal(weight.float(), fp8_weights[key])
    finally:
        mm.unload_all_models()
    assert float((out - reference).abs().max()) <= 2e-2 * float(reference.abs().max())
    assert float((forward(fp8_model) - reference).abs().max()) > 5e-2 * float(reference.abs().max())


def test_stacked_loras_on_gguf_equal_dequantized_reference(gguf_model, dit_sd):
    """Three LoRAs (q/k/v slices, fused qkv, LoHa) stacked on a GGUF DiT, with negative and > 1 strengths."""
    stack = ((write_lora("musubi_kohya", dit_sd, seed=30), 1.4), (write_lora("comfyui", dit_sd, seed=31), -0.6),
             (write_loha(dit_sd, seed=32), 0.5))
    model, sd = gguf_model, _dequantized_sd(gguf_model)
    for (lora, deltas), strength in stack:
        model, _, _ = _apply(model, lora, strength)
        sd = reference_state_dict(sd, deltas, strength)
    assert_matches_reference(forward(model), forward(_dense_model(sd)), forward(gguf_model))


def test_partially_loaded_fp8_with_loras_equals_fully_loaded(fp8_model, dit_sd):
    """The fp8 side computations (object patches on the layers' forward) under low-VRAM partial loading."""
    import comfy.model_management as mm
    base = forward(fp8_model)
    patched, _, _ = _apply(fp8_model, write_lora("musubi_kohya", dit_sd, seed=41)[0], 0.8)
    x, context = _inputs()
    cpu = torch.device("cpu")

    def run():
        return patched.model.apply_model(x, torch.tensor([0.6]), c_crossattn=context, num_tokens=12)
    mm.unload_all_models()
    patched.patch_model(cpu, lowvram_model_memory=0)  # what load_models_gpu does: object patches, then load
    full = run()
    patched.unpatch_model(cpu)
    patched.patch_model(cpu, lowvram_model_memory=max(1, patched.model_size() // 3))
    try:
        assert patched.model.model_lowvram
        assert torch.equal(run(), full)
        assert float((full.float() - base).abs().max()) > 1e-2, "the LoRA is applied in both loads"
    finally:
        patched.unpatch_model(cpu)
