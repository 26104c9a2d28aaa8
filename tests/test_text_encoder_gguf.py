"""Qwen3 text encoder from GGUF: every quant type against transformers and the safetensors path, tokenizer
from the file, memory, errors, LoRA and the node's file list.

References are independent of the pack's dequantizers: gguf-py dequantizes the blocks the transformers model
is built from (hidden_states[-2] of the FULL model, last layer included), and gguf-py's own tensor-name map
checks the name table.
"""
from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
import torch

from zimage_turbo.fixtures.shapes import TINY_QWEN3
from zimage_turbo.fixtures.tiny_models import qwen3_gguf_tensors, write_qwen3_gguf

# For Q8_0/Q4_0/Q6_K/Q5_K/Q4_K two matrices (an attention and an MLP one) go through the pack's quantizer, the
# other matrices and the embedding are random valid blocks (the K-quant search is slow on 2 cores);
# F16/BF16 are the rounded floats; IQ4_NL/IQ2_XS (no quantizer) are all crafted blocks.
TYPES = ["F16", "BF16", "Q8_0", "Q6_K", "Q5_K", "Q4_K", "Q4_0", "IQ4_NL", "IQ2_XS"]
QUANTIZED_BY_PACK = ("blk.0.attn_q.weight", "blk.1.ffn_down.weight")
PROMPT = "a photo of a cat 一只猫 🐱, 35mm"


def _gguf_py_dense(t) -> torch.Tensor:
    """gguf-py's dequantization of a tensor as written (float tensors: themselves)."""
    import gguf
    from zimage_turbo.quant.tensor import QuantizedTensor
    if isinstance(t, tuple):
        return t[0].float()
    assert isinstance(t, QuantizedTensor)
    raw = t.raw_bytes().numpy()
    dense = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[t.quant_type.name])
    return torch.from_numpy(np.ascontiguousarray(dense, dtype=np.float32)).reshape(t.logical_shape)


def _gguf_py_rows(t, rows: list[int]) -> torch.Tensor:
    """gguf-py's dequantization of some rows of an embedding table (only those blocks are read)."""
    import gguf
    from zimage_turbo.quant.tensor import QuantizedTensor
    if isinstance(t, QuantizedTensor):
        raw = t.raw_bytes().numpy()[rows]
        dense = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[t.quant_type.name])
        return torch.from_numpy(np.ascontiguousarray(dense, dtype=np.float32))
    return _gguf_py_dense(t)[rows]


def _reference_hidden(tensors: dict, spec, ids: list[int], hidden_from_end: int = 2) -> torch.Tensor:
    """transformers Qwen3Model (all layers, final norm) on gguf-py-dequantized weights: hidden_states[-k].

    The embedding table is reduced to the rows of the prompt (ids remapped), which is the same computation.
    """
    from transformers import Qwen3Config, Qwen3Model
    from zimage_turbo.loaders.keymaps import llama_cpp_to_hf
    unique = sorted(set(ids))
    cfg = Qwen3Config(vocab_size=len(unique), hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
                      num_hidden_layers=spec.num_hidden_layers, num_attention_heads=spec.num_attention_heads,
                      num_key_value_heads=spec.num_key_value_heads, head_dim=spec.head_dim,
                      rms_norm_eps=spec.rms_norm_eps, rope_theta=spec.rope_theta, max_position_embeddings=4096,
                      attn_implementation="eager")
    model = Qwen3Model(cfg).float().eval()
    sd = {}
    for name, t in tensors.items():
        key = llama_cpp_to_hf(name)[len("model."):]
        sd[key] = _gguf_py_rows(t, unique) if key == "embed_tokens.weight" else _gguf_py_dense(t)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not missing and not unexpected
    remap = {t: i for i, t in enumerate(unique)}
    with torch.no_grad():
        out = model(torch.tensor([[remap[t] for t in ids]]), output_hidden_states=True)
    return out.hidden_states[-hidden_from_end]


def _dense_hf_state_dict(tensors: dict, rows: list[int]) -> dict[str, torch.Tensor]:
    """The same weights, dense fp32 in HF names (what a safetensors file of them holds).

    Of the 151936-row embedding only the rows of `rows` (the prompt's tokens) are filled, the rest are zeros:
    an encoder reads no other row, and expanding the whole table would only cost test time.
    """
    from zimage_turbo.loaders.keymaps import llama_cpp_to_hf
    from zimage_turbo.quant.dequant_ops import dequantize_rows
    from zimage_turbo.quant.tensor import QuantizedTensor
    out = {}
    for name, t in tensors.items():
        key = llama_cpp_to_hf(name)
        if key == "model.embed_tokens.weight":
            table = torch.zeros(tuple(t.logical_shape), dtype=torch.float32)
            table[rows] = dequantize_rows(t, rows, torch.float32)
            out[key] = table
        else:
            out[key] = t.dequantize(torch.float32) if isinstance(t, QuantizedTensor) else t[0].float()
    return out


def _encode(clip, prompt: str = PROMPT):
    tokens = clip.tokenize(prompt)
    ids = [t for t, _ in tokens["qwen3_4b"][0]]
    return clip.encode_from_tokens_scheduled(tokens)[0][0], ids


# --------------------------------------------------------------------------------------------- names
def test_name_map_agrees_with_gguf_py():
    """Our llama.cpp → HF table equals gguf-py's tensor-name map for the qwen3 architecture."""
    import gguf
    from zimage_turbo.fixtures.shapes import qwen3_state_dict_shapes
    from zimage_turbo.loaders.keymaps import hf_to_llama_cpp, llama_cpp_to_hf
    spec = replace(TINY_QWEN3, vocab_size=64)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN3, spec.num_hidden_layers)
    for hf in qwen3_state_dict_shapes(spec):
        ours = hf_to_llama_cpp(hf)
        assert names.get_name(hf, try_suffixes=(".weight",)) == ours, hf
        assert llama_cpp_to_hf(ours) == hf
    assert llama_cpp_to_hf("output.weight") == "lm_head.weight"
    assert llama_cpp_to_hf("blk.0.attn_qkv.weight") is None  # not a Qwen3 tensor: reported, never guessed


# ------------------------------------------------------------------------------------ every quant type
@pytest.mark.parametrize("type_name", TYPES)
def test_gguf_conditioning_matches_transformers_and_safetensors(comfy_host, tmp_path, type_name):
    """CONDITIONING from a GGUF of each type == transformers hidden_states[-2] (gguf-py weights, full model)
    within float tolerance, and == the safetensors path on the same (dequantized) weights, exactly."""
    from zimage_turbo.loaders.text_encoder import build_qwen3_clip, load_qwen3_text_encoder
    from zimage_turbo.quant.tensor import QuantizedTensor
    spec = TINY_QWEN3
    tensors = qwen3_gguf_tensors(spec, type_name, seed=3, quantize_only=QUANTIZED_BY_PACK)
    path = write_qwen3_gguf(tmp_path / f"qwen3-tiny-{type_name}.gguf", spec, type_name, tensors=tensors)
    clip = load_qwen3_text_encoder(path)

    layer = clip.cond_stage_model.qwen3_4b.transformer.model.layers[0]
    expected_weight = QuantizedTensor if type_name not in ("F16", "BF16") else torch.Tensor
    assert isinstance(layer.self_attn.q_proj.weight, expected_weight)
    cond, ids = _encode(clip)
    assert ids[:3] == [151644, 872, 198]  # <|im_start|>user\n : Z-Image's chat template
    ref = _reference_hidden(tensors, spec, ids)
    assert cond.shape == ref.shape
    torch.testing.assert_close(cond.float(), ref, rtol=2e-4, atol=2e-4)

    dense = build_qwen3_clip(_dense_hf_state_dict(tensors, sorted(set(ids))), f"qwen3-tiny-{type_name}.safetensors")
    cond_dense, ids_dense = _encode(dense)
    assert ids_dense == ids
    assert torch.equal(cond, cond_dense)


# --------------------------------------------------------------------------------------------- memory
def test_weights_stay_quantized_and_unused_tensors_are_not_loaded(comfy_host, tmp_path):
    """Resident bytes of the encoder ≈ bytes of the GGUF tensors it uses: nothing was expanded; the last layer,
    the final norm and output.weight are never loaded."""
    import comfy.model_management as mm
    from zimage_turbo.fixtures.tiny_models import random_quant_blocks
    from zimage_turbo.loaders.text_encoder import load_qwen3_text_encoder
    from zimage_turbo.quant.gguf_reader import GGUFFile
    from zimage_turbo.quant.tensor import QuantizedTensor
    spec = TINY_QWEN3
    tensors = qwen3_gguf_tensors(spec, "Q4_K", seed=4, quantize_layers=0)
    tensors["output.weight"] = random_quant_blocks((spec.vocab_size, spec.hidden_size), "Q4_0", seed=9)
    path = write_qwen3_gguf(tmp_path / "qwen3-tiny-Q4_K.gguf", spec, "Q4_K", tensors=tensors)
    clip = load_qwen3_text_encoder(path)
    model = clip.cond_stage_model
    transformer = model.qwen3_4b.transformer.model
    assert len(transformer.layers) == spec.num_hidden_layers - 1 and transformer.norm is None
    assert isinstance(transformer.embed_tokens.weight, QuantizedTensor)
    last = spec.num_hidden_layers - 1
    with GGUFFile(path) as g:
        infos = list(g)
        used = sum(i.n_bytes for i in infos if i.name == "token_embd.weight"
                   or (i.name.startswith("blk.") and int(i.name.split(".")[1]) < last))
        total = sum(i.n_bytes for i in infos)
    resident = mm.module_size(model)
    assert abs(resident - used) <= 0.10 * used + 64 * 1024, (resident, used)
    assert resident < 0.6 * total  # output.weight (as big as the embedding) and the last block stay on disk
    cond, _ = _encode(clip)
    assert torch.isfinite(cond).all()
    assert mm.module_size(model) == resident  # encoding dequantized nothing into the model


def test_clip_set_last_layer_keeps_the_full_model_meaning(comfy_host, tmp_path):
    """CLIPSetLastLayer(-3) on the (last-layer-less) encoder gives the full model's hidden_states[-3]."""
    from zimage_turbo.loaders.text_encoder import load_qwen3_text_encoder
    spec = TINY_QWEN3
    tensors = qwen3_gguf_tensors(spec, "Q8_0", seed=5)
    path = write_qwen3_gguf(tmp_path / "qwen3-tiny-Q8_0.gguf", spec, "Q8_0", tensors=tensors)
    clip = load_qwen3_text_encoder(path).clone()
    clip.clip_layer(-3)
    cond, ids = _encode(clip)
    torch.testing.assert_close(cond.float(), _reference_hidden(tensors, spec, ids, 3), rtol=2e-4, atol=2e-4)
    clip.clip_layer(-2)
    cond, ids = _encode(clip)
    torch.testing.assert_close(cond.float(), _reference_hidden(tensors, spec, ids, 2), rtol=2e-4, atol=2e-4)


# ------------------------------------------------------------------------------------------ tokenizer
@pytest.fixture(scope="module")
def tokenizer_gguf(comfy_host, tmp_path_factory):
    """A tiny Qwen3 GGUF with llama.cpp's names and the Qwen2 BPE tokenizer metadata of ComfyUI's bundled files."""
    from zimage_turbo.loaders.gguf_tokenizer import bundled_tokenizer_dir
    spec = TINY_QWEN3
    tensors = qwen3_gguf_tensors(spec, "Q8_0", seed=6, quantize_layers=0)
    path = tmp_path_factory.mktemp("tok") / "Qwen3-tiny-Q8_0.gguf"
    return write_qwen3_gguf(path, spec, "Q8_0", tensors=tensors, tokenizer_dir=bundled_tokenizer_dir())


def test_gguf_tokenizer_round_trips_to_bundled_ids(tokenizer_gguf):
    from zimage_turbo.loaders.gguf_tokenizer import (CORPUS, build_gguf_tokenizer, bundled_tokenizer,
                                                     check_gguf_tokenizer, token_ids)
    from zimage_turbo.quant.gguf_reader import GGUFFile
    with GGUFFile(tokenizer_gguf) as g:
        metadata = g.metadata
        assert len(metadata["tokenizer.ggml.tokens"]) == TINY_QWEN3.vocab_size  # padded with [PADn] like llama.cpp
        tok = build_gguf_tokenizer(metadata)
    reference = bundled_tokenizer()
    assert "" in CORPUS and any(len(p) > 1000 for p in CORPUS)
    for prompt in CORPUS:
        assert token_ids(tok, prompt) == token_ids(reference, prompt), prompt
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_pad|>"):
        assert tok.convert_tokens_to_ids(special) == reference.convert_tokens_to_ids(special)
    assert check_gguf_tokenizer(metadata).matches


def test_loader_uses_bundled_tokenizer_when_ids_match(tokenizer_gguf):
    import comfy.text_encoders.z_image as z_image
    from zimage_turbo.loaders.gguf_tokenizer import CORPUS
    from zimage_turbo.loaders.text_encoder import load_qwen3_text_encoder
    auto = load_qwen3_text_encoder(tokenizer_gguf)
    assert type(auto.tokenizer) is z_image.ZImageTokenizer and auto.tokenizer.zimage_tokenizer_check.matches
    own = load_qwen3_text_encoder(tokenizer_gguf, tokenizer="gguf")
    assert type(own.tokenizer) is not z_image.ZImageTokenizer
    for prompt in CORPUS[:6]:  # the template is applied exactly as ComfyUI does, with either tokenizer
        assert own.tokenize(prompt) == auto.tokenize(prompt)
    cond_auto, _ = _encode(auto)
    cond_own, _ = _encode(own)
    assert torch.equal(cond_auto, cond_own)


def test_tokenizer_mismatch_is_reported(comfy_host, tokenizer_gguf, tmp_path, caplog):
    """A file whose tokenizer gives other ids: 'auto' uses the file's and warns, 'strict' refuses it."""
    from zimage_turbo.fixtures.tiny_models import qwen_tokenizer_metadata
    from zimage_turbo.loaders.errors import ModelFileError
    from zimage_turbo.loaders.gguf_tokenizer import bundled_tokenizer_dir
    from zimage_turbo.loaders.text_encoder import load_qwen3_text_encoder
    tok_meta = qwen_tokenizer_metadata(bundled_tokenizer_dir(), TINY_QWEN3.vocab_size)
    merges = tok_meta["tokenizer.ggml.merges"]
    tok_meta["tokenizer.ggml.merges"] = [m for m in merges if m not in ("Ġ Ġ", "ĠĠ ĠĠ")]  # no multi-space tokens
    tensors = qwen3_gguf_tensors(TINY_QWEN3, "Q8_0", seed=6, quantize_layers=0)
    path = write_qwen3_gguf(tmp_path / "odd-tokenizer.gguf", TINY_QWEN3, "Q8_0", tensors=tensors, metadata=tok_meta)
    with caplog.at_level(logging.WARNING):
        clip = load_qwen3_text_encoder(path)
    check = clip.tokenizer.zimage_tokenizer_check
    assert check.status == "differs" and check.mismatches
    assert "differs from ComfyUI's Qwen tokenizer" in caplog.text and "odd-tokenizer.gguf" in caplog.text
    prompt = check.mismatches[0][0]
    ids = [t for t, _ in clip.tokenize(prompt)["qwen3_4b"][0]]
    assert ids == check.mismatches[0][1]  # the file's tokenizer is the one used
    with pytest.raises(ModelFileError, match=r"^odd-tokenizer\.gguf: expected .*matches ComfyUI's Qwen tokenizer"):
        load_qwen3_text_encoder(path, tokenizer="strict")


# --------------------------------------------------------------------------------------------- errors
def _minimal_gguf(path, arch: str, hidden: int = 256, tensors: dict | None = None):
    from zimage_turbo.fixtures.tiny_models import qwen3_gguf_metadata
    from zimage_turbo.quant.gguf_writer import write_gguf
    spec = replace(TINY_QWEN3, hidden_size=hidden)
    meta = {k.replace("qwen3.", f"{arch}."): v for k, v in qwen3_gguf_metadata(spec, architecture="qwen3").items()}
    meta["general.architecture"] = arch
    write_gguf(path, tensors or {"token_embd.weight": (torch.zeros(64, hidden), "F16")}, meta)
    return path


@pytest.mark.parametrize("arch,found,hint", [
    ("llama", "architecture 'llama'", "Qwen3-4B"),
    ("qwen2", "architecture 'qwen2'", "Qwen3-4B"),
    ("lumina2", "architecture 'lumina2'", "Z-Image Diffusion Model Loader"),
])
def test_other_architectures_are_named(comfy_host, tmp_path, arch, found, hint):
    from zimage_turbo.loaders.errors import ModelFileError
    from zimage_turbo.loaders.text_encoder import load_qwen3_text_encoder
    path = _minimal_gguf(tmp_path / f"model-{arch}.gguf", arch)
    with pytest.raises(ModelFileError) as info:
        load_qwen3_text_encoder(path)
    message = str(info.value)
    assert message.startswith(f"model-{arch}.gguf: expected ") and "'qwen3'" in message
    assert found in message and hint in message


def test_dit_gguf_without_architecture_is_named(comfy_host, tmp_path):
    from zimage_turbo.fixtures.shapes import TINY_DIT, dit_state_dict_shapes
    from zimage_turbo.loaders.errors import ModelFileError
    from zimage_turbo.loaders.text_encoder import load_qwen3_text_encoder
    from zimage_turbo.quant.gguf_writer import write_gguf
    path = tmp_path / "z_image_turbo-Q8_0.gguf"
    write_gguf(path, {k: (torch.zeros(s), "F16") for k, s in dit_state_dict_shapes(TINY_DIT).items()}, {})
    with pytest.raises(ModelFileError, match=r"^z_image_turbo-Q8_0\.gguf: expected .*'qwen3'.*found a GGUF with no "
                                             r"architecture holding a Z-Image DiT"):
        load_qwen3_text_encoder(path)


def test_qwen3_8b_is_refused_by_name(comfy_host, tmp_path):
    from zimage_turbo.loaders.errors import ModelFileError
    from zimage_turbo.loaders.text_encoder import load_qwen3_text_encoder
    path = _minimal_gguf(tmp_path / "Qwen3-8B-Q4_K_M.gguf", "qwen3", hidden=4096)
    with pytest.raises(ModelFileError) as info:
        load_qwen3_text_encoder(path)
    message = str(info.value)
    assert message.startswith("Qwen3-8B-Q4_K_M.gguf: expected ")
    assert "Qwen3-8B" in message.split("found", 1)[1] and "hidden size 4096" in message and "Qwen3-4B" in message


def test_missing_tensors_are_listed(comfy_host, tmp_path):
    from zimage_turbo.loaders.errors import ModelFileError
    from zimage_turbo.loaders.text_encoder import load_qwen3_text_encoder
    tensors = qwen3_gguf_tensors(TINY_QWEN3, "Q8_0", seed=7, quantize_layers=0)
    del tensors["blk.1.ffn_down.weight"]
    path = write_qwen3_gguf(tmp_path / "cut.gguf", TINY_QWEN3, "Q8_0", tensors=tensors)
    with pytest.raises(ModelFileError, match=r"^cut\.gguf: expected .*Qwen3-4B.*found 1 missing tensors "
                                             r"\(model\.layers\.1\.mlp\.down_proj\.weight\)"):
        load_qwen3_text_encoder(path)


def test_missing_last_layer_is_fine(comfy_host, tmp_path):
    """The last block is never read, so a file without it still loads."""
    from zimage_turbo.loaders.text_encoder import load_qwen3_text_encoder
    last = TINY_QWEN3.num_hidden_layers - 1
    tensors = {k: v for k, v in qwen3_gguf_tensors(TINY_QWEN3, "Q8_0", seed=7, quantize_layers=0).items()
               if not k.startswith(f"blk.{last}.") and k != "output_norm.weight"}
    clip = load_qwen3_text_encoder(write_qwen3_gguf(tmp_path / "no-last.gguf", TINY_QWEN3, "Q8_0", tensors=tensors))
    assert torch.isfinite(_encode(clip)[0]).all()


# ----------------------------------------------------------------------------------------------- LoRA
def test_core_lora_on_gguf_encoder_matches_dense(comfy_host, tmp_path):
    """Core LoRA loading on the GGUF CLIP has the effect it has on the same weights loaded densely."""
    import comfy.sd
    from zimage_turbo.loaders.text_encoder import build_qwen3_clip, load_qwen3_text_encoder
    tensors = qwen3_gguf_tensors(TINY_QWEN3, "Q8_0", seed=8, quantize_layers=0)
    path = write_qwen3_gguf(tmp_path / "lora-base.gguf", TINY_QWEN3, "Q8_0", tensors=tensors)
    quant = load_qwen3_text_encoder(path)
    ids = [t for t, _ in quant.tokenize(PROMPT)["qwen3_4b"][0]]
    dense = build_qwen3_clip(_dense_hf_state_dict(tensors, sorted(set(ids))))
    g = torch.Generator().manual_seed(0)
    lora = {}
    for target, (out_f, in_f) in {"layers.0.self_attn.q_proj": (256, 256), "layers.1.mlp.down_proj": (256, 512)}.items():
        name = f"text_encoders.qwen3_4b.transformer.model.{target}"
        lora[f"{name}.lora_down.weight"] = torch.randn(4, in_f, generator=g) * 0.3
        lora[f"{name}.lora_up.weight"] = torch.randn(out_f, 4, generator=g) * 0.3
    base_q, base_d = _encode(quant)[0], _encode(dense)[0]
    with_q = _encode(comfy.sd.load_lora_for_models(None, quant, lora, 0.0, 1.0)[1])[0]
    with_d = _encode(comfy.sd.load_lora_for_models(None, dense, lora, 0.0, 1.0)[1])[0]
    effect = (with_d - base_d).norm()
    assert effect / base_d.norm() > 0.01
    torch.testing.assert_close(with_q, with_d, rtol=1e-4, atol=1e-4)
    layer = quant.cond_stage_model.qwen3_4b.transformer.model.layers[0].self_attn.q_proj
    assert layer.weight.__class__.__name__ == "QuantizedTensor"  # LoRA ran beside the weight, not into it
    assert torch.equal(_encode(quant)[0], base_q)  # the base CLIP is untouched by its patched clone
    assert layer.lora_side == []


# ----------------------------------------------------------------------------------------------- node
def test_node_lists_gguf_from_text_encoders_and_clip_gguf(comfy_host, tmp_path, monkeypatch):
    import folder_paths
    from zimage_turbo.nodes.text_encoder import ZImageTextEncoderLoader
    te_dir, gguf_dir = tmp_path / "text_encoders", tmp_path / "clip_gguf"
    te_dir.mkdir()
    gguf_dir.mkdir()
    (te_dir / "qwen_3_4b.safetensors").write_bytes(b"")
    (gguf_dir / "Qwen3-4B-Q6_K.gguf").write_bytes(b"")
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "text_encoders", ([str(te_dir)], {".safetensors"}))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "clip_gguf", ([str(gguf_dir)], {".gguf"}))
    for folder in ("text_encoders", "clip_gguf"):
        getattr(folder_paths, "filename_list_cache", {}).pop(folder, None)
    names = ZImageTextEncoderLoader.INPUT_TYPES()["required"]["text_encoder_name"][0]
    assert names == ["qwen_3_4b.safetensors", "Qwen3-4B-Q6_K.gguf"]
    for folder in ("text_encoders", "clip_gguf"):
        getattr(folder_paths, "filename_list_cache", {}).pop(folder, None)


# ------------------------------------------------------------------------ Qwen3-4B-Instruct-2507 GGUFs (issue 20)
def test_qwen3_instruct_2507_gguf_runs_with_its_own_rope(comfy_host, tmp_path):
    """stable-diffusion.cpp's recommended encoder (unsloth/Qwen3-4B-Instruct-2507-GGUF): architecture qwen3 with
    the same shapes and tokenizer as Qwen3-4B, but rope_theta 5e6 and a 262144 context (its config.json). The
    loader takes rope_theta from the file's metadata: the conditioning matches transformers at 5e6 (not at 1e6)."""
    from zimage_turbo.loaders.gguf_tokenizer import bundled_tokenizer_dir
    from zimage_turbo.loaders.text_encoder import load_qwen3_text_encoder
    spec = replace(TINY_QWEN3, rope_theta=5_000_000.0)
    tensors = qwen3_gguf_tensors(spec, "Q4_K", seed=8, quantize_only=QUANTIZED_BY_PACK)
    path = write_qwen3_gguf(tmp_path / "Qwen3-4B-Instruct-2507-Q4_K_M.gguf", spec, "Q4_K", tensors=tensors,
                            tokenizer_dir=bundled_tokenizer_dir(),
                            metadata={"general.name": "Qwen3-4B-Instruct-2507", "general.finetune": "Instruct-2507",
                                      "qwen3.context_length": ("u32", 262144)})
    clip = load_qwen3_text_encoder(path)
    assert clip.tokenizer.zimage_tokenizer_check.matches  # the same vocabulary: ComfyUI's tokenizer is used
    cond, ids = _encode(clip)
    torch.testing.assert_close(cond.float(), _reference_hidden(tensors, spec, ids), rtol=2e-4, atol=2e-4)
    other = _reference_hidden(tensors, replace(spec, rope_theta=1_000_000.0), ids)
    assert not torch.allclose(cond.float(), other, rtol=2e-4, atol=2e-4)
