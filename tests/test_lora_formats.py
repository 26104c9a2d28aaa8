"""ZImageLoraLoader: every trainer's key layout, on bf16 and GGUF DiTs, against a dense reference (fp8 DiTs:
test_lora_fp8.py).

The LoRA writers (`fixtures/lora_files.py`) build each trainer's file from its published key layout; they never use
the pack's mapping code. The reference applies W + s·(B·A) (or the LoHa / LoKr / diff delta) to the weights in the
test and builds a dense model from them.
"""
from __future__ import annotations

import pytest
import torch

from zimage_turbo.fixtures.lora_files import (D, RANK, WRITERS, apply_lora, dense_model, dequantized_state_dict,
                                              forward, full_and_partial_load_outputs, reference_state_dict,
                                              stored_bytes, write_loha, write_lora)
from zimage_turbo.quant.convert import convert_to_gguf


@pytest.fixture(scope="module")
def dit_sd(comfy_host, tiny_paths):
    from safetensors.torch import load_file
    return load_file(str(tiny_paths["diffusion_models"]))


@pytest.fixture(scope="module")
def fp32_model(comfy_host, tiny_paths):
    from zimage_turbo.loaders.dit import load_zimage_dit
    return load_zimage_dit(tiny_paths["diffusion_models"], "fp32")


# what the report must call each file (format detected from the keys alone)
EXPECTED_LAYOUT = {"comfyui": "ComfyUI", "ai_toolkit": "ai-toolkit", "diffusers_peft": "diffusers / PEFT",
                   "diffsynth": "DiffSynth", "musubi_kohya": "musubi-tuner", "kohya_no_alpha": "musubi-tuner",
                   "loha": "musubi-tuner", "lokr": "LyCORIS", "full_diff": "ComfyUI", "dora": "musubi-tuner"}
EXPECTED_ADAPTERS = {"loha": ("LoHa",), "lokr": ("LoKr",), "full_diff": ("full diff",), "dora": ("LoRA", "DoRA")}


@pytest.mark.parametrize("fmt", list(WRITERS))
@pytest.mark.parametrize("strength", [1.0, -0.7, 1.8])
def test_each_format_equals_dense_reference_on_bf16_weights(fmt, strength, dit_sd, fp32_model):
    lora, deltas = WRITERS[fmt](dit_sd)
    patched, _, report = apply_lora(fp32_model, lora, strength)
    assert report.unmatched == [] and report.shape_mismatch == []
    assert len(report.dit_patched) == len({key for key, _, _ in deltas})
    assert EXPECTED_LAYOUT[fmt] in report.layout and report.adapters == EXPECTED_ADAPTERS.get(fmt, ("LoRA",))
    reference = forward(dense_model(reference_state_dict(dit_sd, deltas, strength)))
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
    ours, _, _ = apply_lora(fp32_model, lora, 0.9)
    assert torch.equal(forward(core), forward(ours))


def test_musubi_format_is_not_read_by_core_but_is_by_the_pack(dit_sd, fp32_model, comfy_host):
    """The reason for the pack's loader: core drops musubi-tuner's default names ("lora key not loaded")."""
    lora, deltas = write_lora("musubi_kohya", dit_sd)
    core, _ = comfy_host["sd"].load_lora_for_models(fp32_model, None, lora, 1.0, 0)
    base = forward(fp32_model)
    patched_keys = {k for k in core.patches}
    assert "diffusion_model.layers.0.attention.qkv.weight" not in patched_keys
    ours, _, report = apply_lora(fp32_model, lora)
    assert "diffusion_model.layers.0.attention.qkv.weight" in report.dit_patched
    assert float((forward(ours) - base).abs().max()) > 1e-3


def test_stacked_loras_add_up(dit_sd, fp32_model):
    first, d1 = write_lora("ai_toolkit", dit_sd, seed=10)
    second, d2 = write_lora("musubi_kohya", dit_sd, seed=11)
    third, d3 = write_loha(dit_sd, seed=12)
    model = fp32_model
    for lora, strength in ((first, 0.6), (second, -1.2), (third, 0.8)):
        model, _, _ = apply_lora(model, lora, strength)
    sd = reference_state_dict(dit_sd, d1, 0.6)
    sd = reference_state_dict(sd, d2, -1.2)
    sd = reference_state_dict(sd, d3, 0.8)
    assert float((forward(model) - forward(dense_model(sd))).abs().max()) <= 1e-5


def test_report_names_every_unmatched_key(dit_sd, fp32_model):
    lora, _ = write_lora("musubi_kohya", dit_sd)
    lora["lora_unet_layers_7_attention_to_q.lora_down.weight"] = torch.zeros(RANK, D)  # no layer 7 here
    lora["lora_unet_layers_7_attention_to_q.lora_up.weight"] = torch.zeros(D, RANK)
    lora["some_other_tensor"] = torch.zeros(3)
    lora["lora_te_layers_0_self_attn_q_proj.lora_down.weight"] = torch.zeros(RANK, 256)
    # the context refiner has no adaLN in Z-Image: a name core's map knows, for a weight the model lacks
    lora["lora_unet_context_refiner_0_adaLN_modulation_0.lora_down.weight"] = torch.zeros(RANK, 256)
    lora["lora_unet_context_refiner_0_adaLN_modulation_0.lora_up.weight"] = torch.zeros(4 * D, RANK)
    _, _, report = apply_lora(fp32_model, lora)
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
        apply_lora(fp32_model, lora)


def test_wrong_size_lora_is_reported_as_shape_mismatch(fp32_model):
    from zimage_turbo.loaders.errors import ModelFileError
    lora = {"diffusion_model.layers.0.attention.qkv.lora_up.weight": torch.zeros(3 * 3840, 4),
            "diffusion_model.layers.0.attention.qkv.lora_down.weight": torch.zeros(4, 3840)}
    with pytest.raises(ModelFileError, match="shapes do not fit"):
        apply_lora(fp32_model, lora)


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


def _stored_weights(model, deltas):
    return {key: model.model.diffusion_model.get_submodule(key.rsplit(".", 1)[0]).weight for key, _, _ in deltas}


@pytest.mark.parametrize("fmt", ["musubi_kohya", "ai_toolkit", "comfyui", "loha", "full_diff"])
def test_gguf_lora_equals_dequantized_forward_plus_delta(fmt, gguf_model, dit_sd):
    from zimage_turbo.quant.tensor import QuantizedTensor
    lora, deltas = WRITERS[fmt](dit_sd)
    before = _stored_weights(gguf_model, deltas)
    patched, _, report = apply_lora(gguf_model, lora, 0.9)
    assert report.unmatched == []
    reference = forward(dense_model(reference_state_dict(dequantized_state_dict(gguf_model), deltas, 0.9)))
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
    patched, _, _ = apply_lora(gguf_model, lora, 1.0)
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


def test_stacked_loras_on_gguf_equal_dequantized_reference(gguf_model, dit_sd):
    """Three LoRAs (q/k/v slices, fused qkv, LoHa) stacked on a GGUF DiT, with negative and > 1 strengths."""
    stack = ((write_lora("musubi_kohya", dit_sd, seed=30), 1.4), (write_lora("comfyui", dit_sd, seed=31), -0.6),
             (write_loha(dit_sd, seed=32), 0.5))
    model, sd = gguf_model, dequantized_state_dict(gguf_model)
    for (lora, deltas), strength in stack:
        model, _, _ = apply_lora(model, lora, strength)
        sd = reference_state_dict(sd, deltas, strength)
    assert_matches_reference(forward(model), forward(dense_model(sd)), forward(gguf_model))


# ---------------------------------------------------------------- core's node and low-VRAM partial loading

def test_core_lora_loader_model_only_still_works_on_the_pack_model(gguf_model, dit_sd, comfy_host):
    lora, deltas = write_lora("comfyui", dit_sd)
    core, _ = comfy_host["sd"].load_lora_for_models(gguf_model, None, lora, 1.0, 0)
    reference = forward(dense_model(reference_state_dict(dequantized_state_dict(gguf_model), deltas, 1.0)))
    assert_matches_reference(forward(core), reference, forward(gguf_model))




def test_partially_loaded_gguf_with_slice_loras_equals_fully_loaded(gguf_model, dit_sd):
    """ComfyUI's low-VRAM partial loading (layers cast per use) gives the same output with q/k/v slice LoRAs."""
    patched, _, _ = apply_lora(gguf_model, write_lora("musubi_kohya", dit_sd, seed=21)[0], 0.8)
    full, partial = full_and_partial_load_outputs(patched)
    assert torch.equal(partial, full)


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
    _, new_clip, report = apply_lora(fp32_model, {**dit_lora, **te_lora}, 1.0, clip=clip)
    assert len(report.text_encoder_patched) == len(TE_TARGETS) and report.unmatched == []
    reference = _encode(build_qwen3_clip(reference_state_dict(hf_sd, te_deltas, 1.0)))
    base, out = _encode(clip), _encode(new_clip)
    assert float((base - reference).abs().max()) > 1e-3
    assert float((out - reference).abs().max()) <= 1e-4 * max(1.0, float(reference.abs().max()))
    # without a CLIP the same keys are reported as skipped, not silently dropped
    _, none_clip, report = apply_lora(fp32_model, {**dit_lora, **te_lora}, 1.0)
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
    _, new_clip, report = apply_lora(fp32_model, te_lora, 1.0, clip=clip)
    assert len(report.text_encoder_patched) == len(TE_TARGETS)
    reference = _encode(build_qwen3_clip(reference_state_dict(dense, te_deltas, 1.0)))
    out = _encode(new_clip)
    assert float((out - reference).abs().max()) <= 2e-3 * max(1.0, float(reference.abs().max()))
    q_proj = new_clip.cond_stage_model.qwen3_4b.transformer.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj.weight, QuantizedTensor)


def test_text_encoder_part_on_a_comfy_quant_fp8_clip_leaves_its_weights(comfy_host, tmp_path, fp32_model):
    """A mixed-fp8 `.comfy_quant` encoder (Comfy-Org's qwen_3_4b_fp8_mixed layout): a LoRA runs beside its fp8
    layers and a full diff applies to the weight dequantized for each use; the stored fp8 bytes never change."""
    import comfy.model_management as mm
    import comfy.utils
    from zimage_turbo.fixtures.comfy_quant_files import fp8_mixed
    from zimage_turbo.fixtures.tiny_models import build_qwen3_state_dict, save_safetensors_atomic
    from zimage_turbo.loaders.text_encoder import build_qwen3_clip, load_qwen3_text_encoder
    if not hasattr(comfy.utils, "convert_old_quants"):
        pytest.skip(f"ComfyUI {comfy_host['version']} cannot run .comfy_quant layers (the loader refuses them)")
    hf_sd = {k: v.float() for k, v in build_qwen3_state_dict().items()}
    file_sd, dense = fp8_mixed(hf_sd, lambda key, value: key.startswith("model.layers."))
    clip = load_qwen3_text_encoder(save_safetensors_atomic(file_sd, tmp_path / "qwen3_fp8_mixed.safetensors"))
    te_lora, te_deltas = write_text_encoder_lora(dense)
    diff = torch.randn(*dense["model.layers.1.mlp.up_proj.weight"].shape, generator=torch.Generator().manual_seed(7))
    te_lora["lora_te_layers_1_mlp_up_proj.diff"] = 0.05 * diff
    te_deltas.append(("model.layers.1.mlp.up_proj.weight", None, 0.05 * diff))
    layers = clip.cond_stage_model.qwen3_4b.transformer.model.layers
    stored = {name: stored_bytes(layer) for name, layer in layers.named_modules() if name.endswith("_proj")}
    assert all(layer["weight"][0] == torch.float8_e4m3fn for layer in stored.values())
    _, new_clip, report = apply_lora(fp32_model, te_lora, 1.0, clip=clip)
    assert len(report.text_encoder_patched) == len(TE_TARGETS) + 1 and report.unmatched == []
    reference = _encode(build_qwen3_clip(reference_state_dict(dense, te_deltas, 1.0)))
    try:
        out = _encode(new_clip)  # the encoder stays loaded, with its patches, after encoding
        for name, before in stored.items():
            after = stored_bytes(layers.get_submodule(name))
            assert after.keys() == before.keys()
            assert all(after[k][0] == dtype and torch.equal(after[k][1], raw) for k, (dtype, raw) in before.items())
    finally:
        mm.unload_all_models()
    base = _encode(clip)
    assert float((base - reference).abs().max()) > 1e-3
    assert float((out - reference).abs().max()) <= 1e-4 * max(1.0, float(reference.abs().max()))


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
    reference = forward(dense_model(reference_state_dict(dit_sd, deltas, 1.0)))
    assert float((forward(model) - reference).abs().max()) <= 1e-5


def test_node_refuses_a_pickle_renamed_safetensors(loras_dir, fp32_model):
    import pickle
    from zimage_turbo.loaders.errors import ModelFileError
    from zimage_turbo.nodes.lora import ZImageLoraLoader
    (loras_dir / "evil.safetensors").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ModelFileError, match="evil.safetensors"):
        ZImageLoraLoader().load(fp32_model, "evil.safetensors", 1.0)
