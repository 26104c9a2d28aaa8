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
from dataclasses import dataclass

import torch

from . import host
from .config import infer_qwen3_config
from .detect import (MIN_QWEN3_LAYERS, PACK_LOADERS, classify, consecutive_blocks, describe, loader_hint,
                     qwen3_problem, strip_known_prefix)
from .dit_quant_formats import header_model_shapes, require_comfy_quant_support
from .errors import ModelFileError
from .gguf_io import logical_shape
from .keymaps import block_index, can_drop_last, map_qwen3_names, qwen3_layer_keys, unused_qwen3_keys
from .metadata import MetadataReader, describe_value
from .nonfinite import check_small_tensors_finite
from .safetensors_file import load_tensors, read_header
from .text_encoder_guard import guarded_classes

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
QWEN_PAD_ID = 151643  # <|endoftext|>, ComfyUI's Qwen3 pad token


class _Target:
    """The (clip, tokenizer, params) triple `comfy.sd.CLIP` expects, for Z-Image."""

    def __init__(self, clip_class, tokenizer_class) -> None:
        (self.clip, self.tokenizer), self.params = guarded_classes(clip_class, tokenizer_class), {}


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
    require_bundled_vocabulary(path, config["vocab_size"])
    check_small_tensors_finite(sd, path)
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
    prefix, shapes = strip_known_prefix(header_model_shapes([header]))
    config = check_qwen3(path, shapes)
    # a safetensors file has no tokenizer of its own
    require_bundled_vocabulary(path, config["vocab_size"], embedding=prefix + "model.embed_tokens.weight")
    skip = unused_qwen3_keys(shapes, config["num_hidden_layers"]) if can_drop_last(config["num_hidden_layers"]) else set()
    wanted = [k for k in shapes if k not in skip or k == "model.norm.weight"]
    sd = {k[len(prefix):]: v for k, v in load_tensors(header, [prefix + k for k in wanted]).items()}
    check_small_tensors_finite(sd, path)
    require_comfy_quant_support(sd, path, EXPECTED, "qwen_3_4b.safetensors or a Qwen3-4B GGUF")
    return _build_dense_clip(sd, config)


# ----------------------------------------------------------------------------------------------- GGUF
# Metadata sizes that must agree with the tensors: config field -> (key after "<arch>.", highest value read).
QWEN3_SIZE_KEYS = {"hidden_size": ("embedding_length", 1 << 16), "intermediate_size": ("feed_forward_length", 1 << 20),
                   "num_attention_heads": ("attention.head_count", 1 << 12),
                   "num_key_value_heads": ("attention.head_count_kv", 1 << 12),
                   "head_dim": ("attention.key_length", 1 << 12)}
# Metadata floats: config field -> (key after "<arch>.", exclusive lower bound, upper bound, default).
QWEN3_FLOAT_KEYS = {"rope_theta": ("rope.freq_base", 1.0, 1e12, 1_000_000.0),
                    "rms_norm_eps": ("attention.layer_norm_rms_epsilon", 0.0, 1.0, 1e-6)}
MAX_LAYERS = 4096


def qwen3_config_from_gguf(path, metadata: dict, shapes: dict[str, tuple[int, ...]], num_layers: int,
                           arch: str = GGUF_ARCH) -> dict:
    """The encoder config from `qwen3.*` metadata, checked against the shapes of the loaded tensors (HF names).

    Keys the file lacks are taken from the shapes; a key of the wrong type, out of range or disagreeing with
    the tensors is a ModelFileError naming the key.
    """
    reader = MetadataReader(path, metadata)
    config = infer_qwen3_config(shapes)
    config["num_hidden_layers"] = num_layers
    for field, (key, high) in QWEN3_SIZE_KEYS.items():
        reader.int(f"{arch}.{key}", 1, high, default=None, allowed=(config[field],),
                   agreement=f"matching the tensors ({config[field]})")
    for field, (key, above, at_most, default) in QWEN3_FLOAT_KEYS.items():
        config[field] = reader.number(f"{arch}.{key}", above, at_most, default=default)
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


def _gguf_tokenizer_class(hf_tokenizer, hidden_size: int, pad_id: int | None = None):
    """ComfyUI's Z-Image tokenizer (template, settings) with the GGUF's own BPE tokenizer inside (padding with
    the file's padding id, else Qwen's <|endoftext|>)."""
    pad_token = QWEN_PAD_ID if pad_id is None else pad_id
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
                pad_to_max_length=False, max_length=99999999, min_length=1, pad_token=pad_token,
                tokenizer_data=tokenizer_data)

    class GGUFZImageTokenizer(z_image.ZImageTokenizer):
        def __init__(self, embedding_directory=None, tokenizer_data={}):
            super().__init__(embedding_directory=embedding_directory,
                             tokenizer_data={**tokenizer_data, "qwen3_4b_tokenizer_class": GGUFQwen3Tokenizer})

    return GGUFZImageTokenizer


_TOKENIZER_CHECKS: dict[tuple, object] = {}


def gguf_tokenizer_check(path, metadata: dict, rows: int | None = None):
    """The (cached per file version) comparison of the file's tokenizer with ComfyUI's bundled one; `rows`: the
    embedding rows its token ids must stay within."""
    from .gguf_tokenizer import check_gguf_tokenizer
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns, rows)
    if key not in _TOKENIZER_CHECKS:
        _TOKENIZER_CHECKS.clear()
        _TOKENIZER_CHECKS[key] = check_gguf_tokenizer(metadata, rows=rows)
    return _TOKENIZER_CHECKS[key]


def require_bundled_vocabulary(path, rows: int, why: str = "the file has no tokenizer",
                               embedding: str = "model.embed_tokens.weight") -> None:
    """Refuse an embedding table with fewer rows than ids ComfyUI's bundled Qwen tokenizer emits (its ids past
    the table would fail at the first prompt). `embedding`: the table's name in the file."""
    from .gguf_tokenizer import bundled_id_count
    needed = bundled_id_count()
    if rows < needed:
        raise ModelFileError(path, f"a Qwen3 text encoder whose embedding table covers the {needed} ids of ComfyUI's "
                             "Qwen tokenizer (or a GGUF with its own tokenizer)",
                             f"an embedding table ('{embedding}') of {rows} rows, and {why}",
                             "This is not Qwen3-4B's vocabulary: use a Qwen3-4B file.", key=embedding)


def _unusable_tokenizer_error(path, check, bundled_fits: bool) -> ModelFileError:
    """The ModelFileError for a file whose own tokenizer is required but absent, unsupported or malformed."""
    damaged = check.error is not None
    if bundled_fits:
        instead = "use tokenizer 'bundled' or another conversion of Qwen3-4B" if damaged else \
            "use tokenizer 'auto' to take ComfyUI's bundled Qwen tokenizer"
    else:
        instead = "ComfyUI's Qwen tokenizer does not fit its embedding table either; use a Qwen3-4B file"
    if damaged:
        return check.error.for_file(path, f"The file's tokenizer metadata is damaged; {instead}.")
    return ModelFileError(path, "a GGUF with a tokenizer this pack can rebuild", check.detail,
                          instead[0].upper() + instead[1:] + ".", key=check.key)


def choose_tokenizer(path, metadata: dict, hidden_size: int, policy: str = "auto", rows: int | None = None,
                     embedding: str = "model.embed_tokens.weight"):
    """(tokenizer class for the CLIP, TokenizerCheck or None) following `policy`.

    auto: ComfyUI's bundled tokenizer when the file's tokenizer gives the same ids on the test corpus (or the
    file has none, or one this pack cannot rebuild, or malformed tokenizer metadata: a warning names the key);
    when the ids differ, the file's own tokenizer (it belongs to its embedding table) and a warning that names
    the first difference. bundled: always ComfyUI's. gguf: always the file's (error when it has none).
    strict: error when they differ or the file's tokenizer metadata is malformed.
    Whatever the policy, ComfyUI's tokenizer is used only when the embedding table has a row for each of its
    ids (`rows`, when given; `embedding` names the table): otherwise the file's own tokenizer, or a
    ModelFileError when it has none.
    """
    import comfy.text_encoders.z_image as z_image
    if policy not in TOKENIZER_POLICIES:
        raise ValueError(f"tokenizer policy must be one of {', '.join(TOKENIZER_POLICIES)}, got {policy!r}")
    from .gguf_tokenizer import bundled_id_count
    name = os.path.basename(os.fspath(path))
    bundled_fits = rows is None or rows >= bundled_id_count()
    if policy == "bundled":
        if not bundled_fits:
            require_bundled_vocabulary(path, rows, "tokenizer 'bundled' was asked for", embedding)
        return z_image.ZImageTokenizer, None
    check = gguf_tokenizer_check(path, metadata, rows)

    def own():
        return _gguf_tokenizer_class(check.tokenizer, hidden_size, check.pad_id), check

    if check.status == "match":
        log.info("%s: tokenizer in the file gives the same ids as ComfyUI's Qwen tokenizer (%s).", name, check.detail)
        return own() if policy == "gguf" or not bundled_fits else (z_image.ZImageTokenizer, check)
    if check.status in ("absent", "unsupported", "invalid"):
        if policy == "gguf" or (check.status == "invalid" and (policy == "strict" or not bundled_fits)):
            raise _unusable_tokenizer_error(path, check, bundled_fits)
        if not bundled_fits:
            require_bundled_vocabulary(path, rows, check.detail, embedding)
        report = log.warning if check.status == "invalid" else log.info
        report("%s: %s; using ComfyUI's bundled Qwen tokenizer.", name, check.detail)
        return z_image.ZImageTokenizer, check
    if policy == "strict":
        raise ModelFileError(path, "a GGUF whose tokenizer matches ComfyUI's Qwen tokenizer",
                             f"a different tokenizer: {check.detail}",
                             "The file's vocabulary is not Qwen3's; use another conversion of Qwen3-4B.")
    log.warning("%s: the tokenizer in the file differs from ComfyUI's Qwen tokenizer (%s). Using the file's "
                "tokenizer, which belongs to its embedding table; conditioning will differ from qwen_3_4b."
                "safetensors.", name, check.detail)
    return own()


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


@dataclass
class Qwen3GGUF:
    """A Qwen3 encoder GGUF whose metadata and tensors were checked against each other (nothing built yet)."""
    path: str | os.PathLike
    metadata: dict
    sd: dict[str, torch.Tensor]  # HF names: the tensors the encoder reads
    config: dict
    drop_last: bool
    type_names: dict[str, str]
    embedding_name: str  # the token embedding's name in the file


def _gguf_architecture(path, metadata: dict, names: list[str]) -> str:
    """The file's architecture when it is Qwen3 (or absent, with Qwen3 tensors); ModelFileError naming it otherwise."""
    arch = MetadataReader(path, metadata).string("general.architecture", default=None, max_length=200)
    qwen3_names = any(n in names for n in ("blk.0.attn_q_norm.weight", "model.layers.0.self_attn.q_norm.weight"))
    if arch == GGUF_ARCH or (arch is None and qwen3_names):
        return GGUF_ARCH
    default = "Z-Image needs the Qwen3-4B text encoder."
    if arch is None:  # no architecture: say what the tensors are and where they belong
        gguf = _read_gguf(path, EXPECTED_GGUF)
        found = _describe_gguf(gguf)
        hint = loader_hint(classify(strip_known_prefix(gguf.shapes())[1]), "te", default)
    else:
        found, hint = f"a GGUF of architecture '{arch}'", GGUF_ARCH_HINTS.get(arch, default)
    raise ModelFileError(path, EXPECTED_GGUF, found, hint, key="general.architecture" if arch is not None else None)


def _gguf_layer_count(path, metadata: dict, arch: str, hf_names) -> int:
    """Layers of the encoder: the blocks of tensors present, and `<arch>.block_count` checked against them (it
    may count one more: the last block is never read, so a file may leave it out) before anything loops."""
    blocks = consecutive_blocks(dict.fromkeys(hf_names), "model.layers")
    if isinstance(blocks, str):
        raise ModelFileError(path, EXPECTED_GGUF + " with every layer", blocks, "The file is incomplete or damaged.")
    key = f"{arch}.block_count"
    if blocks < MIN_QWEN3_LAYERS:
        declared = f" ({key} = {describe_value(metadata[key])})" if key in metadata else ""
        raise ModelFileError(path, f"{EXPECTED_GGUF} with at least {MIN_QWEN3_LAYERS} layers (Z-Image reads the "
                             "second-to-last hidden state)", f"{blocks} blocks of tensors{declared}",
                             "The file is incomplete or not Qwen3-4B.", key=key)
    return MetadataReader(path, metadata).int(key, 1, MAX_LAYERS, default=blocks, allowed=(blocks, blocks + 1),
                                              agreement=f"matching the {blocks} blocks of tensors")


def read_qwen3_gguf(path: str | os.PathLike) -> Qwen3GGUF:
    """Everything the GGUF loader checks before ComfyUI builds anything: architecture, metadata (typed, in range,
    agreeing with the tensors), the tensors the encoder reads, their shapes, and NaN/Inf in the small ones."""
    names: list[str] = []

    def only_names(name: str) -> bool:
        names.append(name)
        return False

    head = _read_gguf(path, EXPECTED_GGUF, keep=only_names)  # metadata and tensor names; no tensor is touched
    metadata = head.metadata
    arch = _gguf_architecture(path, metadata, names)
    declared = MetadataReader(path, metadata).int(f"{arch}.embedding_length", 1, QWEN3_SIZE_KEYS["hidden_size"][1],
                                                  default=None)
    if declared is not None:
        _check_hidden_size(path, declared)  # before touching tensors: a Qwen3-8B file is refused at once
    mapping, unknown = map_qwen3_names(names)
    if unknown:
        log.info("%s: ignoring %d tensors that are not part of a Qwen3 encoder (e.g. %s)",
                 os.path.basename(os.fspath(path)), len(unknown), unknown[0])
    num_layers = _gguf_layer_count(path, metadata, arch, mapping.values())
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
    shapes = {k: logical_shape(v) for k, v in sd.items()}
    problem = qwen3_problem(shapes, min_layers=1)  # the layer count was checked against the metadata
    if problem:
        raise ModelFileError(path, EXPECTED_GGUF, f"a damaged Qwen3 text encoder ({problem})",
                             "The file is damaged or not a Qwen3 text encoder.")
    config = qwen3_config_from_gguf(path, metadata, shapes, num_layers, arch)
    _check_size(path, config)
    for key, shape in _expected_shapes(config, built).items():
        if shapes[key] != shape:
            raise ModelFileError(path, EXPECTED_GGUF + " whose tensors fit its metadata",
                                 f"tensor '{key}' of shape {list(shapes[key])} where {list(shape)} fits the metadata",
                                 "The file is damaged or not a Qwen3 text encoder.")
    check_small_tensors_finite(gguf.tensors, path)  # by the names in the file
    embedding = next(name for name, hf in mapping.items() if hf == "model.embed_tokens.weight")
    return Qwen3GGUF(path, metadata, sd, config, drop_last, gguf.type_names, embedding)


def load_qwen3_gguf_text_encoder(path: str | os.PathLike, tokenizer: str = "auto"):
    """A Qwen3-4B GGUF (any quantization) as a standard CLIP for Z-Image; weights stay quantized.

    Architecture and sizes come from the `qwen3.*` metadata (checked against the tensors, see
    :func:`read_qwen3_gguf`); llama.cpp tensor names are mapped to ComfyUI's; the last layer, the final norm
    and `output.weight` are never read. `tokenizer`: see :func:`choose_tokenizer`.
    """
    import comfy.text_encoders.z_image

    gguf = read_qwen3_gguf(path)
    config, sd = gguf.config, gguf.sd
    tokenizer_class, check = choose_tokenizer(path, gguf.metadata, config["hidden_size"], tokenizer,
                                              rows=config["vocab_size"], embedding=gguf.embedding_name)
    options = encoder_options(config, gguf.drop_last)
    te = comfy.text_encoders.z_image.te(dtype_llama=torch.float32)
    parameters = sum(int(torch.Size(logical_shape(v)).numel()) for v in sd.values())
    clip, not_loaded = _quant_clip(_Target(te, tokenizer_class), sd, parameters, options)
    if not_loaded:
        raise ModelFileError(path, EXPECTED_GGUF + " with every tensor", f"tensors missing: {', '.join(not_loaded[:4])}")
    clip.tokenizer.zimage_tokenizer_check = check
    types = Counter(gguf.type_names.values())
    log.info("Qwen3 GGUF %s: %d layers (%d loaded, hidden state -2), hidden %d, tensor types %s, tokenizer: %s",
             os.path.basename(os.fspath(path)), config["num_hidden_layers"],
             config["num_hidden_layers"] - int(gguf.drop_last), config["hidden_size"],
             ", ".join(f"{t} x{n}" for t, n in types.most_common()),
             "ComfyUI's bundled" if tokenizer_class is comfy.text_encoders.z_image.ZImageTokenizer else "the file's")
    return clip
