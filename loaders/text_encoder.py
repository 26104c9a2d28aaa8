"""Qwen3 text encoder loader: safetensors or GGUF file → config from the file → ComfyUI Z-Image CLIP.

Z-Image conditions on the hidden state of the second-to-last Qwen3 layer (HF `hidden_states[-2]`, ComfyUI
`layer="hidden", layer_idx=-2`, no final norm). Both paths therefore build the encoder *without* its last
layer and final norm (:func:`encoder_class`): the output of the last layer built is exactly that hidden state,
and the weights after it are never read.

GGUF files (llama.cpp naming and metadata: unsloth, bartowski, `convert_hf_to_gguf.py`) keep their weights
quantized in memory: Linear layers dequantize per use (`quant.ops.QuantOps`), the token embedding dequantizes
only the rows of the prompt's tokens, and LoRA runs beside the quantized layers (`QuantModelPatcher`).
"""
from __future__ import annotations

import functools
import inspect
import logging
import os
from collections import Counter

import torch

from . import host
from .config import count_blocks, infer_qwen3_config
from .detect import PACK_LOADERS, classify, describe, loader_hint, strip_known_prefix
from .dit_quant_formats import require_comfy_quant_support
from .errors import ModelFileError
from .keymaps import block_index, can_drop_last, map_qwen3_names, qwen3_layer_keys, unused_qwen3_keys
from .safetensors_file import load_tensors, read_header

log = logging.getLogger(__name__)

EXPECTED = "a Qwen3 text encoder (e.g. qwen_3_4b.safetensors)"
EXPECTED_GGUF = "a Qwen3-4B text encoder GGUF (architecture 'qwen3', e.g. Qwen3-4B-Q6_K.gguf)"
COMFY_HEAD_DIM = 128  # ComfyUI's Qwen3 config fixes head_dim; other widths are a different model family
CONFIG_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads")
ZIMAGE_TE_HIDDEN = 2560  # Qwen3-4B, whose hidden states Z-Image's caption embedder takes
# Hidden sizes of the other released Qwen3 dense models: files of these sizes are refused by name. Other
# sizes (tiny test models, …) load, since the DiT loader checks its own caption width.
OTHER_QWEN3_SIZES = {1024: "Qwen3-0.6B", 2048: "Qwen3-1.7B", 4096: "Qwen3-8B", 5120: "Qwen3-14B/Qwen3-32B"}
GGUF_ARCH = "qwen3"
GGUF_ARCH_HINTS = {
    "lumina2": f"This is a diffusion model: load it with {PACK_LOADERS['dit']}.",
    "zimage_control": f"This is a ControlNet patch: load it with {PACK_LOADERS['controlnet']}.",
    "qwen3moe": "Qwen3 MoE models are not Z-Image's text encoder.",
    "qwen3vl": "Qwen3-VL is not Z-Image's text encoder.",
}
TOKENIZER_POLICIES = ("auto", "bundled", "gguf", "strict")


class _Target:
    """The (clip, tokenizer, params) triple `comfy.sd.CLIP` expects, for Z-Image."""

    def __init__(self, clip_class, tokenizer_class) -> None:
        self.clip, self.tokenizer, self.params = clip_class, tokenizer_class, {}


# ----------------------------------------------------------------------------------------- the encoder
@functools.lru_cache(maxsize=None)
def encoder_class():
    """ComfyUI's `Qwen3_4BModel` built without its last layer and final norm, returning their input.

    The loader passes `num_hidden_layers` = layers in the file − 1 and `final_norm` False; the output of the
    last layer built is then the full model's hidden state −2, which Z-Image uses. Layer options
    (CLIPSetLastLayer) keep the meaning they have on the full model: −2 is this output, −3 … the layers before.
    """
    import comfy.text_encoders.z_image

    class ZImageQwen3Encoder(comfy.text_encoders.z_image.Qwen3_4BModel):
        dropped_layers = 1

        def __init__(self, device="cpu", layer="hidden", layer_idx=-2, dtype=None, attention_mask=True,
                     model_options={}):
            name = model_options.get("model_name", "qwen3_4b")
            config = dict(model_options.get(f"{name}_model_config", {}))
            config["final_norm"] = False
            model_options = {**model_options, f"{name}_model_config": config}
            super().__init__(device=device, layer="last", layer_idx=None, dtype=dtype,
                             attention_mask=attention_mask, model_options=model_options)

        def set_clip_options(self, options):
            layer = options.get("layer", None)
            if isinstance(layer, int) and not isinstance(layer, bool):
                full = self.num_layers + self.dropped_layers
                index = layer + full if layer < 0 else layer  # the layer of the full model asked for
                if index == self.num_layers - 1:
                    options = {**options, "layer": None}  # our output ("last")
                elif 0 <= index < self.num_layers - 1:
                    options = {**options, "layer": index}
                else:
                    log.warning("Qwen3 layer %d is not loaded (Z-Image uses layer -2); using layer -2.", layer)
                    options = {**options, "layer": None}
            super().set_clip_options(options)

    return ZImageQwen3Encoder


def encoder_options(config: dict, drop_last: bool) -> dict:
    """`model_options` entries that give ComfyUI's Z-Image TE the file's config (and drop the last layer)."""
    model_config = {k: v for k, v in config.items() if k in CONFIG_FIELDS + ("rms_norm_eps", "rope_theta")}
    if not drop_last:
        return {"qwen3_4b_model_config": model_config}
    model_config["num_hidden_layers"] = config["num_hidden_layers"] - 1
    return {"qwen3_4b_model_config": model_config, "qwen3_4b_class": encoder_class()}


# ----------------------------------------------------------------------------------------- safetensors
def check_qwen3(path: str | os.PathLike, shapes: dict) -> dict:
    """Raise ModelFileError unless `shapes` is a Qwen3 encoder ComfyUI can run; return its config."""
    kind = classify(shapes)
    if kind is None or kind.name != "qwen3_te":
        raise ModelFileError(path, EXPECTED, describe(shapes),
                             loader_hint(kind, "te", "Put Qwen3-4B files in models/text_encoders."))
    config = infer_qwen3_config(shapes)
    if config["head_dim"] != COMFY_HEAD_DIM:
        raise ModelFileError(path, f"a Qwen3 encoder with head_dim {COMFY_HEAD_DIM}",
                             f"head_dim {config['head_dim']}", "This Qwen3 variant is not used by Z-Image.")
    return config


def build_qwen3_clip(sd: dict[str, torch.Tensor], path: str | os.PathLike = "<state dict>", model_options=None):
    """A ComfyUI CLIP (Z-Image tokenizer + Qwen3 encoder, hidden state −2) from an HF-layout state dict."""
    config = check_qwen3(path, {k: tuple(v.shape) for k, v in sd.items()})
    return _build_dense_clip(sd, config, model_options)


def _build_dense_clip(sd: dict[str, torch.Tensor], config: dict, model_options=None):
    """`build_qwen3_clip` for a checked config (`sd` may already lack the tensors after layer −2)."""
    import comfy.text_encoders.hunyuan_video
    import comfy.text_encoders.z_image
    import comfy.utils

    detected = comfy.text_encoders.hunyuan_video.llama_detect(sd, "")  # before dropping model.norm (its dtype)
    drop_last = can_drop_last(config["num_hidden_layers"])
    if drop_last:
        unused = unused_qwen3_keys(sd, config["num_hidden_layers"])
        sd = {k: v for k, v in sd.items() if k not in unused}
    options = dict(model_options or {})
    options.update(encoder_options(config, drop_last))
    te = comfy.text_encoders.z_image.te(**detected)
    target = _Target(te, comfy.text_encoders.z_image.ZImageTokenizer)
    return host.new_clip(target, sd, comfy.utils.calculate_parameters(sd), options)


def load_qwen3_text_encoder(path: str | os.PathLike, tokenizer: str = "auto"):
    """Load a Qwen3 text encoder (safetensors or GGUF, recognised by content) as a standard CLIP for Z-Image.

    Tensors after layer −2 are not read (except the small final norm, whose dtype ComfyUI takes for the
    encoder's). `tokenizer` applies to GGUF files only (see :func:`load_qwen3_gguf_text_encoder`).
    """
    from .gguf_io import is_gguf
    if os.path.isfile(path) and os.path.getsize(path) >= 4 and is_gguf(path):
        return load_qwen3_gguf_text_encoder(path, tokenizer=tokenizer)
    header = read_header(path, expected=EXPECTED)
    prefix, shapes = strip_known_prefix(header.shapes())
    config = check_qwen3(path, shapes)
    skip = unused_qwen3_keys(shapes, config["num_hidden_layers"]) if can_drop_last(config["num_hidden_layers"]) else set()
    wanted = [k for k in shapes if k not in skip or k == "model.norm.weight"]
    sd = {k[len(prefix):]: v for k, v in load_tensors(header, [prefix + k for k in wanted]).items()}
    require_comfy_quant_support(sd, path, EXPECTED, "qwen_3_4b.safetensors or a Qwen3-4B GGUF")
    return _build_dense_clip(sd, config)


# ----------------------------------------------------------------------------------------------- GGUF
def _meta(metadata: dict, arch: str, key: str):
    value = metadata.get(f"{arch}.{key}")
    if value is None:
        return None
    if hasattr(value, "item") and getattr(value, "size", 1) == 1:
        value = value.item()
    return value


def qwen3_config_from_gguf(path, metadata: dict, shapes: dict[str, tuple[int, ...]], num_layers: int,
                           arch: str = GGUF_ARCH) -> dict:
    """The encoder config from `qwen3.*` metadata, checked against the shapes of the loaded tensors (HF names).

    Keys the file lacks are taken from the shapes; a key that disagrees with the tensors is an error.
    """
    config = infer_qwen3_config(shapes)
    config["num_hidden_layers"] = num_layers
    fields = {"hidden_size": "embedding_length", "intermediate_size": "feed_forward_length",
              "num_attention_heads": "attention.head_count", "num_key_value_heads": "attention.head_count_kv",
              "head_dim": "attention.key_length"}
    for field, key in fields.items():
        value = _meta(metadata, arch, key)
        if value is not None and int(value) != config[field]:
            raise ModelFileError(path, EXPECTED_GGUF + " whose metadata fits its tensors",
                                 f"{arch}.{key} = {int(value)} but tensors of {config[field]}",
                                 "The file is damaged or incomplete.")
    theta, eps = _meta(metadata, arch, "rope.freq_base"), _meta(metadata, arch, "attention.layer_norm_rms_epsilon")
    config["rope_theta"] = float(theta) if theta is not None else 1_000_000.0
    config["rms_norm_eps"] = float(eps) if eps is not None else 1e-6
    return config


def _check_hidden_size(path, hidden: int) -> None:
    """Refuse the other released Qwen3 sizes by name (see OTHER_QWEN3_SIZES)."""
    if hidden in OTHER_QWEN3_SIZES:
        raise ModelFileError(path, f"{EXPECTED_GGUF}, hidden size {ZIMAGE_TE_HIDDEN}",
                             f"{OTHER_QWEN3_SIZES[hidden]} (architecture 'qwen3', hidden size {hidden})",
                             "Z-Image was trained on Qwen3-4B's hidden states: use a Qwen3-4B file.")


def _check_size(path, config: dict) -> None:
    _check_hidden_size(path, config["hidden_size"])
    if config["head_dim"] != COMFY_HEAD_DIM:
        raise ModelFileError(path, f"{EXPECTED_GGUF}, head size {COMFY_HEAD_DIM}", f"head size {config['head_dim']}",
                             "This Qwen3 variant is not used by Z-Image.")


def _expected_shapes(config: dict, layers: int) -> dict[str, tuple[int, ...]]:
    h, hd, ff = config["hidden_size"], config["head_dim"], config["intermediate_size"]
    q, kv = config["num_attention_heads"] * hd, config["num_key_value_heads"] * hd
    shapes = {"model.embed_tokens.weight": (config["vocab_size"], h)}
    for i in range(layers):
        per_layer = {"input_layernorm": (h,), "self_attn.q_proj": (q, h), "self_attn.k_proj": (kv, h),
                     "self_attn.v_proj": (kv, h), "self_attn.o_proj": (h, q), "self_attn.q_norm": (hd,),
                     "self_attn.k_norm": (hd,), "post_attention_layernorm": (h,), "mlp.gate_proj": (ff, h),
                     "mlp.up_proj": (ff, h), "mlp.down_proj": (h, ff)}
        shapes.update({f"model.layers.{i}.{k}.weight": v for k, v in per_layer.items()})
    return shapes


def _describe_gguf(gguf) -> str:
    arch = gguf.architecture
    if arch is not None:
        return f"a GGUF of architecture '{arch}'"
    _, shapes = strip_known_prefix(gguf.shapes())
    return f"a GGUF with no architecture holding {describe(shapes)}"


def _read_gguf(path, expected: str, keep=None):
    from .gguf_io import read_gguf_state_dict
    return read_gguf_state_dict(path, expected, keep=keep)


def _gguf_tokenizer_class(hf_tokenizer, hidden_size: int):
    """ComfyUI's Z-Image tokenizer (template, settings) with the GGUF's own BPE tokenizer inside."""
    import comfy.text_encoders.z_image as z_image
    from comfy import sd1_clip

    class _FromGGUF:
        @staticmethod
        def from_pretrained(*args, **kwargs):
            return hf_tokenizer

    class GGUFQwen3Tokenizer(z_image.Qwen3Tokenizer):
        def __init__(self, embedding_directory=None, tokenizer_data={}):
            sd1_clip.SDTokenizer.__init__(
                self, None, pad_with_end=False, embedding_directory=embedding_directory, embedding_size=hidden_size,
                embedding_key="qwen3_4b", tokenizer_class=_FromGGUF, has_start_token=False, has_end_token=False,
                pad_to_max_length=False, max_length=99999999, min_length=1, pad_token=151643,
                tokenizer_data=tokenizer_data)

    class GGUFZImageTokenizer(z_image.ZImageTokenizer):
        def __init__(self, embedding_directory=None, tokenizer_data={}):
            super().__init__(embedding_directory=embedding_directory,
                             tokenizer_data={**tokenizer_data, "qwen3_4b_tokenizer_class": GGUFQwen3Tokenizer})

    return GGUFZImageTokenizer


_TOKENIZER_CHECKS: dict[tuple, object] = {}


def gguf_tokenizer_check(path, metadata: dict):
    """The (cached per file version) comparison of the file's tokenizer with ComfyUI's bundled one."""
    from .gguf_tokenizer import check_gguf_tokenizer
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _TOKENIZER_CHECKS:
        _TOKENIZER_CHECKS.clear()
        _TOKENIZER_CHECKS[key] = check_gguf_tokenizer(metadata)
    return _TOKENIZER_CHECKS[key]


def choose_tokenizer(path, metadata: dict, hidden_size: int, policy: str = "auto"):
    """(tokenizer class for the CLIP, TokenizerCheck or None) following `policy`.

    auto: ComfyUI's bundled tokenizer when the file's tokenizer gives the same ids on the test corpus (or the
    file has none, or one this pack cannot rebuild); when the ids differ, the file's own tokenizer (it belongs
    to its embedding table) and a warning that names the first difference.
    bundled: always ComfyUI's. gguf: always the file's (error when it has none). strict: error when they differ.
    """
    import comfy.text_encoders.z_image as z_image
    if policy not in TOKENIZER_POLICIES:
        raise ValueError(f"tokenizer policy must be one of {', '.join(TOKENIZER_POLICIES)}, got {policy!r}")
    name = os.path.basename(os.fspath(path))
    if policy == "bundled":
        return z_image.ZImageTokenizer, None
    check = gguf_tokenizer_check(path, metadata)
    if check.status == "match":
        log.info("%s: tokenizer in the file gives the same ids as ComfyUI's Qwen tokenizer (%s).", name, check.detail)
        return (_gguf_tokenizer_class(check.tokenizer, hidden_size) if policy == "gguf"
                else z_image.ZImageTokenizer), check
    if check.status in ("absent", "unsupported"):
        if policy == "gguf":
            raise ModelFileError(path, "a GGUF with a tokenizer this pack can rebuild", check.detail,
                                 "Use tokenizer 'auto' to take ComfyUI's bundled Qwen tokenizer.")
        log.info("%s: %s; using ComfyUI's bundled Qwen tokenizer.", name, check.detail)
        return z_image.ZImageTokenizer, check
    if policy == "strict":
        raise ModelFileError(path, "a GGUF whose tokenizer matches ComfyUI's Qwen tokenizer",
                             f"a different tokenizer: {check.detail}",
                             "The file's vocabulary is not Qwen3's; use another conversion of Qwen3-4B.")
    log.warning("%s: the tokenizer in the file differs from ComfyUI's Qwen tokenizer (%s). Using the file's "
                "tokenizer, which belongs to its embedding table; conditioning will differ from qwen_3_4b."
                "safetensors.", name, check.detail)
    return _gguf_tokenizer_class(check.tokenizer, hidden_size), check


def _quant_clip(target, sd: dict, parameters: int, options: dict):
    """`comfy.sd.CLIP` whose patcher is a QuantModelPatcher and whose weights stay `QuantizedTensor`s."""
    import comfy.model_management as mm
    import comfy.sd
    from ..quant.ops import QuantOps
    from ..quant.patcher import QuantModelPatcher
    from .gguf_io import densify_unowned

    options = dict(options)
    options["custom_operations"] = QuantOps
    options["dtype"] = torch.float32  # what is allocated densely: norms (kept as exact as the file's F32)
    # Built on the offload device and moved by the patcher when used. Given as a string, the device never
    # equals the load device (a torch.device), so `CLIP.__init__` does not load the placeholder patcher it
    # makes (it is replaced below) even when both are the CPU.
    options.setdefault("initial_device", str(options.get("offload_device", mm.text_encoder_offload_device())))
    kwargs = {"disable_dynamic": True} if "disable_dynamic" in inspect.signature(comfy.sd.CLIP.__init__).parameters else {}
    clip = comfy.sd.CLIP(target, parameters=parameters, model_options=options, **kwargs)
    old = clip.patcher
    patcher = QuantModelPatcher(clip.cond_stage_model, load_device=old.load_device, offload_device=old.offload_device)
    patcher.object_patches = dict(old.object_patches)  # e.g. the fp32 compute dtype newer hosts set for TEs
    for attr in ("force_cast_weights", "hook_mode", "is_clip"):
        if hasattr(old, attr):
            setattr(patcher, attr, getattr(old, attr))
    clip.patcher = patcher
    encoder = getattr(clip.cond_stage_model, clip.cond_stage_model.clip)
    densify_unowned(encoder.transformer, sd)
    missing, _ = clip.cond_stage_model.load_sd(sd)
    return clip, missing


def load_qwen3_gguf_text_encoder(path: str | os.PathLike, tokenizer: str = "auto"):
    """A Qwen3-4B GGUF (any quantization) as a standard CLIP for Z-Image; weights stay quantized.

    Architecture and sizes come from the `qwen3.*` metadata (checked against the tensors); llama.cpp tensor
    names are mapped to ComfyUI's; the last layer, the final norm and `output.weight` are never read.
    `tokenizer`: see :func:`choose_tokenizer`.
    """
    import comfy.text_encoders.z_image

    names: list[str] = []

    def only_names(name: str) -> bool:
        names.append(name)
        return False

    head = _read_gguf(path, EXPECTED_GGUF, keep=only_names)  # metadata and tensor names; no tensor is touched
    arch, metadata = head.architecture, head.metadata
    qwen3_names = any(n in names for n in ("blk.0.attn_q_norm.weight", "model.layers.0.self_attn.q_norm.weight"))
    if arch != GGUF_ARCH and not (arch is None and qwen3_names):
        default = "Z-Image needs the Qwen3-4B text encoder."
        if arch is None:  # no architecture: say what the tensors are and where they belong
            gguf = _read_gguf(path, EXPECTED_GGUF)
            found = _describe_gguf(gguf)
            hint = loader_hint(classify(strip_known_prefix(gguf.shapes())[1]), "te", default)
        else:
            found, hint = f"a GGUF of architecture '{arch}'", GGUF_ARCH_HINTS.get(arch, default)
        raise ModelFileError(path, EXPECTED_GGUF, found, hint)
    arch = arch or GGUF_ARCH
    declared = _meta(metadata, arch, "embedding_length")
    if isinstance(declared, (int, float)):
        _check_hidden_size(path, int(declared))  # before touching tensors: a Qwen3-8B file is refused at once
    mapping, unknown = map_qwen3_names(names)
    if unknown:
        log.info("%s: ignoring %d tensors that are not part of a Qwen3 encoder (e.g. %s)",
                 os.path.basename(os.fspath(path)), len(unknown), unknown[0])
    in_file = count_blocks(dict.fromkeys(mapping.values()), "model.layers")
    block_count = _meta(metadata, arch, "block_count")
    num_layers = int(block_count) if block_count is not None else in_file
    if in_file > num_layers:
        raise ModelFileError(path, EXPECTED_GGUF + " whose metadata fits its tensors",
                             f"{arch}.block_count = {num_layers} but {in_file} blocks", "The file is damaged.")
    drop_last = can_drop_last(num_layers)
    built = num_layers - 1 if drop_last else num_layers
    wanted = {"model.embed_tokens.weight"} | {k for i in range(built) for k in qwen3_layer_keys(i)}
    if not drop_last:
        wanted.add("model.norm.weight")

    gguf = _read_gguf(path, EXPECTED_GGUF, keep=lambda n: mapping.get(n) in wanted)
    sd = {mapping[k]: v for k, v in gguf.tensors.items()}
    missing = sorted(wanted - set(sd), key=lambda k: (block_index(k) or 0, k))
    if missing:
        raise ModelFileError(path, EXPECTED_GGUF + " with every tensor",
                             f"{len(missing)} missing tensors ({', '.join(missing[:4])}{'…' if len(missing) > 4 else ''})",
                             "The file is incomplete or not a Qwen3 text encoder.")
    from .gguf_io import logical_shape
    shapes = {k: logical_shape(v) for k, v in sd.items()}
    config = qwen3_config_from_gguf(path, metadata, shapes, num_layers, arch)
    _check_size(path, config)
    for key, shape in _expected_shapes(config, built).items():
        if shapes[key] != shape:
            raise ModelFileError(path, EXPECTED_GGUF + " whose tensors fit its metadata",
                                 f"tensor '{key}' of shape {list(shapes[key])} where {list(shape)} fits the metadata",
                                 "The file is damaged or not a Qwen3 text encoder.")

    tokenizer_class, check = choose_tokenizer(path, metadata, config["hidden_size"], tokenizer)
    options = encoder_options(config, drop_last)
    te = comfy.text_encoders.z_image.te(dtype_llama=torch.float32)
    parameters = sum(int(torch.Size(s).numel()) for s in shapes.values())
    clip, not_loaded = _quant_clip(_Target(te, tokenizer_class), sd, parameters, options)
    if not_loaded:
        raise ModelFileError(path, EXPECTED_GGUF + " with every tensor", f"tensors missing: {', '.join(not_loaded[:4])}")
    clip.tokenizer.zimage_tokenizer_check = check
    types = Counter(gguf.type_names.values())
    log.info("Qwen3 GGUF %s: %d layers (%d loaded, hidden state -2), hidden %d, tensor types %s, tokenizer: %s",
             os.path.basename(os.fspath(path)), num_layers, built, config["hidden_size"],
             ", ".join(f"{t} x{n}" for t, n in types.most_common()),
             "ComfyUI's bundled" if tokenizer_class is comfy.text_encoders.z_image.ZImageTokenizer else "the file's")
    return clip
