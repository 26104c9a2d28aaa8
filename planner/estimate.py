"""Peak-VRAM estimates per stage (encode, sample, decode) and ComfyUI's offload decision, with no weights loaded.

No ComfyUI import here: the host-dependent numbers come in a `HostProfile` (the node fills it from the live
ComfyUI; the CLI uses the defaults of current ComfyUI on an NVIDIA card). All sizes are bytes.

Formulas (B batch, H×W pixels, ds bytes per compute element, 2 for bf16/fp16):

* Weights on the GPU (`resident_bytes`): the sum over tensors of what ComfyUI keeps on the card.
  GGUF quantized tensors stay in their blocks (numel / block · bytes-per-block); plain tensors (F32/F16/BF16)
  in the compute dtype (ds); fp8 tensors stay fp8 (1 byte) when the card computes fp8 or the model would not
  fit in 16 bit, else they are upcast (ComfyUI `unet_dtype`); `weight_dtype=fp8_*` stores every ≥2-D weight in
  1 byte ("halves bf16"). The VAE and text encoder are held in ds. A GGUF text encoder stays quantized,
  its token embedding included (the pack dequantizes only the prompt's rows), and the text encoder's last
  layer, final norm and output head are never loaded (Z-Image reads hidden state −2).
* DiT activations (`dit_activation_bytes`): tokens T = ⌈H/16⌉·⌈W/16⌉ + 32·⌈L/32⌉ (image patches + caption
  padded to 32, L prompt tokens); peak = B·T·(15·D·ds + 8·head_dim) (15 D-wide tensors alive at the worst
  point of a block, RoPE tables in fp32). The coefficient was measured with `PeakTracker` on the tiny DiT
  through ComfyUI's NextDiT with PyTorch SDPA (test_planner checks it within 15%).
* ComfyUI's activation reservation (`comfy_dit_memory_required`, model_base.BaseModel.memory_required over
  the latent shape [B,16,H/8,W/8], batch doubled for cond+uncond): area = 2B·(H/8)·(W/8);
  with flash/xformers attention: area·ds·0.01·memory_usage_factor MiB, else area·0.15·memory_usage_factor MiB.
  ZImage.memory_usage_factor is 2.8 on current ComfyUI (1.7 on 0.3.75). This number, not the real
  activations, decides how much of the DiT ComfyUI keeps on the card.
* Partial loading (comfy.model_management.load_models_gpu, NVIDIA): reserve R = 400 MiB (600 on Windows);
  min_req = max(0.8 GiB + R, memory_required(B) + R); weights kept on the GPU = free − min_req. What does not
  fit is streamed from RAM every step ("offload"). The previous model is first unloaded until
  free ≥ 1.1·weights + max(0.8 GiB + R, memory_required(2B) + R).
* Streaming/dequant transient: while a layer's weight is cast (offload, fp8 upcast) or dequantized (GGUF)
  two copies of the largest matrix in ds are alive: 2·max_numel·ds.
* Text encoder: weights + B·L·(4·hidden + 3·intermediate)·ds + B·heads·L²·4 (fp32 attention mask/scores);
  ComfyUI loads it with the default reservation (0.8 GiB + R).
* VAE decode: real peak 648·ds bytes per output pixel (measured with `PeakTracker` on the Flux VAE decoder,
  any size: it is linear); ComfyUI reserves memory_used_decode = 2178·(H/8)·(W/8)·64·ds (FACTS §5), 3.4× more.
  Tiled decode of t×t latent tiles needs 648·ds·(8t)² for the tile. ZImageVAEDecode reserves the measured
  figure ×1.3 (`decode_reservation`) through ComfyUI's load_models_gpu, for the picture or the tile.
* Whole-card figures: peak = weights on the GPU + activations + transient, as PyTorch counts it
  (torch.cuda.max_memory_allocated); the CUDA context (~0.35 GiB, `cuda_context`) is outside it but inside
  the card, so "fits" compares peak + context with the card's VRAM.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import PurePosixPath

from ..downloads.tiers import find_workflow
from ..loaders.keymaps import block_index, can_drop_last, llama_cpp_to_hf, unused_qwen3_keys
from .files import FP8_TYPES, ST_BYTES, ModelFile

MiB = 1024 ** 2
GiB = 1024 ** 3

DIT_ACT_D_FACTOR = 15  # D-wide tensors alive at a block's peak (measured, see module doc)
DIT_ACT_ROPE_BYTES_PER_HEAD_DIM = 8  # fp32 cos/sin per token and head-dim element
VAE_DECODE_BYTES_PER_PIXEL_PER_DS = 648  # measured peak of the Flux VAE decoder per output pixel, per ds byte
COMFY_VAE_DECODE_FACTOR = 2178 * 64  # ComfyUI memory_used_decode per latent pixel, per ds byte
DEFAULT_PROMPT_TOKENS = 128  # a long prompt in the Z-Image chat template (padded to 32 for the DiT)
MAX_PROMPT_TOKENS = 512


@dataclass(frozen=True)
class HostProfile:
    """The ComfyUI and card facts the estimates depend on."""
    memory_usage_factor: float = 2.8  # supported_models.ZImage.memory_usage_factor (1.7 on ComfyUI 0.3.75)
    flash_attention: bool = True  # xformers or PyTorch flash attention: memory_required's first branch
    extra_reserved: int = 400 * MiB  # comfy.model_management.EXTRA_RESERVED_VRAM (600 MiB on Windows)
    cuda_context: int = 350 * MiB  # CUDA context + cuBLAS workspace, not seen by PyTorch's allocator
    compute_bytes: int = 2  # ds: bf16/fp16 compute
    vae_bytes: int = 2  # the VAE's dtype on the card (bf16 on cards that have it, else fp32: 4)
    fp8_compute: bool = False  # the card runs fp8 matmuls (Ada/Hopper): fp8 weights are never upcast
    lowvram_weight_ratio: float = 0.0  # MIN_WEIGHT_MEMORY_RATIO (0 on NVIDIA, 0.4 elsewhere)

    @property
    def inference_reserve(self) -> int:
        """comfy.model_management.minimum_inference_memory()."""
        return int(0.8 * GiB) + self.extra_reserved


# ------------------------------------------------------------------------------------------- model geometry
@dataclass(frozen=True)
class DiTDims:
    dim: int
    head_dim: int
    ffn: int
    max_matrix: int  # numel of the largest 2-D weight


@dataclass(frozen=True)
class TEDims:
    hidden: int
    intermediate: int
    heads: int
    max_matrix: int


def _find(mf: ModelFile, *suffixes: str):
    for t in mf.tensors:
        if t.name.endswith(suffixes):
            return t
    return None


def _max_matrix(mf: ModelFile, skip: tuple[str, ...] = ()) -> int:
    return max((t.numel for t in mf.tensors if len(t.shape) >= 2 and not any(s in t.name for s in skip)), default=0)


def dit_dims(mf: ModelFile) -> DiTDims:
    cap = _find(mf, "cap_embedder.1.weight")
    qn = _find(mf, "attention.q_norm.weight", "attention.norm_q.weight")
    w1 = _find(mf, "feed_forward.w1.weight")
    dim = cap.shape[0] if cap else 3840
    return DiTDims(dim, qn.shape[0] if qn else 128, w1.shape[0] if w1 else dim * 8 // 3, _max_matrix(mf))


def te_dims(mf: ModelFile) -> TEDims:
    emb = _find(mf, "embed_tokens.weight", "token_embd.weight")
    gate = _find(mf, "mlp.gate_proj.weight", "ffn_gate.weight")
    q = _find(mf, "self_attn.q_proj.weight", "attn_q.weight")
    hidden = emb.shape[-1] if emb else 2560
    return TEDims(hidden, gate.shape[0] if gate else 9728, (q.shape[0] // 128) if q else 32,
                  _max_matrix(mf, skip=("embed_tokens", "token_embd", "output.weight", "lm_head")))


# ------------------------------------------------------------------------------------------------- weights
# Integer weight storage (INT8 `.comfy_quant` files): ComfyUI keeps the int8 blocks and dequantizes per use.
INT_WEIGHT_TYPES = frozenset({"I8"})


# Roles whose loader has a weight_dtype choice (storage of the ≥2-D weights): the DiT and the ControlNet patch.
WEIGHT_DTYPE_ROLES = ("dit", "control_patch")
# A Fun ControlNet patch's extra activations while its control block runs inside a DiT block: the control
# state, its skip output and the encoded control image, D-wide over the image tokens (an estimate from the
# model's structure, not measured; bench/lowvram.py measures the whole graph with the patch).
CONTROL_ACT_D_FACTOR = 4


def _is_quantized(dtype: str) -> bool:
    return dtype not in ST_BYTES


def te_unloaded(mf: ModelFile) -> set[str]:
    """Tensors of a text encoder file the pack never loads: the last layer, the final norm, the output head.

    The loader's own rule (loaders.keymaps), applied to the file's names (llama.cpp names read as HF names).
    """
    if mf.role != "te":
        return set()
    hf_names = {t.name: llama_cpp_to_hf(t.name) or t.name for t in mf.tensors}
    blocks = {b for name in hf_names.values() if (b := block_index(name)) is not None}
    if not blocks or not can_drop_last(max(blocks) + 1):
        return set()
    unused = unused_qwen3_keys(hf_names.values(), max(blocks) + 1)
    return {name for name, hf in hf_names.items() if hf in unused}


def resident_bytes(mf: ModelFile, host: HostProfile = HostProfile(), weight_dtype: str = "default",
                   usable: int | None = None) -> int:
    """Bytes ComfyUI holds on the card for this model once fully loaded (see module doc)."""
    ds = host.vae_bytes if mf.role == "vae" else host.compute_bytes
    n_params = mf.n_params
    keep_fp8 = host.fp8_compute or (usable is not None and n_params * 2 > usable)
    skipped = te_unloaded(mf)
    total = 0
    for t in mf.tensors:
        if t.name in skipped:
            continue
        if mf.role in WEIGHT_DTYPE_ROLES and weight_dtype.startswith("fp8") and len(t.shape) >= 2:
            total += t.numel if not _is_quantized(t.dtype) else t.n_bytes
        elif mf.role in WEIGHT_DTYPE_ROLES and weight_dtype in ("bf16", "fp16", "fp32") and not _is_quantized(t.dtype):
            total += t.numel * {"bf16": 2, "fp16": 2, "fp32": 4}[weight_dtype]
        elif _is_quantized(t.dtype) or t.dtype in INT_WEIGHT_TYPES:
            total += t.n_bytes
        elif t.dtype in FP8_TYPES:
            total += t.numel if (keep_fp8 or mf.role != "dit") else t.numel * ds
        else:
            total += t.numel * ds
    return total


def _needs_cast(mf: ModelFile, weight_dtype: str) -> bool:
    """Layers whose weights are converted at every use (GGUF dequant, fp8 upcast)."""
    return (any(_is_quantized(t.dtype) or t.dtype in FP8_TYPES or t.dtype in INT_WEIGHT_TYPES for t in mf.tensors)
            or weight_dtype.startswith("fp8"))


# --------------------------------------------------------------------------------------------- activations
def caption_tokens(prompt_tokens: int = DEFAULT_PROMPT_TOKENS) -> int:
    return 32 * math.ceil(min(prompt_tokens, MAX_PROMPT_TOKENS) / 32)


def dit_tokens(width: int, height: int, prompt_tokens: int = DEFAULT_PROMPT_TOKENS) -> int:
    return math.ceil(height / 16) * math.ceil(width / 16) + caption_tokens(prompt_tokens)


def dit_activation_bytes(dims: DiTDims, width: int, height: int, batch: int = 1,
                         prompt_tokens: int = DEFAULT_PROMPT_TOKENS, ds: int = 2) -> int:
    tokens = dit_tokens(width, height, prompt_tokens)
    return batch * tokens * (DIT_ACT_D_FACTOR * dims.dim * ds + DIT_ACT_ROPE_BYTES_PER_HEAD_DIM * dims.head_dim)


def comfy_dit_memory_required(width: int, height: int, batch: int = 1, host: HostProfile = HostProfile()) -> int:
    """ComfyUI's `BaseModel.memory_required` for the latent [batch, 16, H/8, W/8] (no extra conds)."""
    area = batch * math.ceil(height / 8) * math.ceil(width / 8)
    if host.flash_attention:
        return int(area * host.compute_bytes * 0.01 * host.memory_usage_factor * MiB)
    return int(area * 0.15 * host.memory_usage_factor * MiB)


def te_activation_bytes(dims: TEDims, tokens: int = DEFAULT_PROMPT_TOKENS, batch: int = 1, ds: int = 2) -> int:
    tokens = min(tokens, MAX_PROMPT_TOKENS)
    return batch * (tokens * (4 * dims.hidden + 3 * dims.intermediate) * ds + dims.heads * tokens * tokens * 4)


def vae_decode_bytes(width: int, height: int, batch: int = 1, ds: int = 2) -> int:
    return batch * VAE_DECODE_BYTES_PER_PIXEL_PER_DS * ds * width * height


def comfy_vae_decode_reservation(width: int, height: int, batch: int = 1, ds: int = 2) -> int:
    """ComfyUI's `VAE.memory_used_decode` (FACTS §5) for a batch of H×W pictures."""
    return batch * COMFY_VAE_DECODE_FACTOR * math.ceil(height / 8) * math.ceil(width / 8) * ds


DECODE_SAFETY = 1.3  # margin on the measured decode peak when deciding whole vs tiled


def decode_reservation(width: int, height: int, batch: int = 1, ds: int = 2) -> int:
    """What ZImageVAEDecode tells ComfyUI a decode needs: the measured peak ×1.3 (not ComfyUI's 3.4× formula)."""
    return int(vae_decode_bytes(width, height, batch, ds) * DECODE_SAFETY)

MIN_TILE, TILE_STEP = 16, 8  # latent units (128 px minimum, multiples of 64 px)


def pick_decode_tiles(width: int, height: int, available: int, ds: int = 2, batch: int = 1) -> tuple[int, int] | None:
    """None when the whole batch decodes in `available` bytes; else (tile, overlap) in latent units.

    The tile is the largest square whose decode (648·ds per pixel, ×1.3 margin) fits `available`;
    the overlap is a quarter of the tile (at most 32 latent = 256 px, at least 4 = 32 px), ComfyUI's own
    VAEDecodeTiled ratio limit. ComfyUI decodes the batch one picture at a time when tiling.
    """
    if vae_decode_bytes(width, height, batch, ds) * DECODE_SAFETY <= available:
        return None
    per_px = VAE_DECODE_BYTES_PER_PIXEL_PER_DS * ds * DECODE_SAFETY
    side_px = math.sqrt(max(available, 0) / per_px)
    tile = max(MIN_TILE, int(side_px / 8) // TILE_STEP * TILE_STEP)
    tile = min(tile, max(math.ceil(width / 8), math.ceil(height / 8)))
    overlap = min(32, max(4, tile // 4))
    return tile, overlap


# ----------------------------------------------------------------------------------------------- the plan
@dataclass
class Stage:
    name: str  # "encode" | "sample" | "decode"
    model: str
    weights: int  # bytes of the model on the card when fully loaded
    on_gpu: int  # bytes of it ComfyUI keeps on the card
    activations: int
    transient: int  # cast/dequant copies of layer weights
    other_resident: int  # bytes of the previous stage's model still on the card
    reservation: int  # what ComfyUI reserves for activations (decides partial loading)
    note: str = ""

    @property
    def streamed(self) -> int:
        return max(0, self.weights - self.on_gpu)

    @property
    def offload(self) -> bool:
        return self.streamed > 0

    @property
    def peak(self) -> int:
        return self.on_gpu + self.activations + self.transient + self.other_resident


@dataclass
class Plan:
    vram: int
    width: int
    height: int
    batch: int
    te: ModelFile
    dit: ModelFile
    vae: ModelFile
    stages: list[Stage]
    host: HostProfile
    decode_tiles: tuple[int, int] | None
    tier_gb: int = 0
    tier: str = ""  # the tier workflow's id (`6gb`), what `download` and `run` take
    workflow: str = ""  # its file, relative to the pack (its stem is the template card's title)
    notes: list[str] = field(default_factory=list)
    control_patch: ModelFile | None = None

    @property
    def peak(self) -> int:
        return max(s.peak for s in self.stages)

    @property
    def offload(self) -> bool:
        return any(s.offload for s in self.stages)

    @property
    def streamed_per_step(self) -> int:
        return self.stage("sample").streamed

    @property
    def fits(self) -> bool:
        """Runs without an out-of-memory error (streaming allowed)."""
        return self.peak + self.host.cuda_context <= self.vram

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def table(self) -> str:
        g = lambda b: f"{b / GiB:6.2f}"  # noqa: E731
        lines = [f"Card {self.vram / GiB:.1f} GiB, {self.width}x{self.height}, batch {self.batch}"
                 f" -> {'fits' if self.fits else 'DOES NOT FIT'}"
                 + (f', tier workflow "{PurePosixPath(self.workflow).stem}" (id {self.tier})' if self.workflow else ""),
                 f"  text encoder: {self.te.label}", f"  DiT:          {self.dit.label}",
                 f"  VAE:          {self.vae.label}",
                 *([f"  ControlNet:   {self.control_patch.label}"] if self.control_patch else []),
                 "  stage    weights  on GPU  streamed  activ.  transient  other   PEAK (GiB)"]
        for s in self.stages:
            lines.append(f"  {s.name:7s} {g(s.weights)}  {g(s.on_gpu)}  {g(s.streamed)}   {g(s.activations)}"
                         f"  {g(s.transient)}    {g(s.other_resident)}  {g(s.peak)}" + (f"  {s.note}" if s.note else ""))
        sample = self.stage("sample")
        lines.append(f"  peak {self.peak / GiB:.2f} GiB + CUDA context {self.host.cuda_context / GiB:.2f} GiB; "
                     + (f"offload: {sample.streamed / 1e9:.2f} GB streamed per step" if sample.offload
                        else "no offloading while sampling"))
        if self.decode_tiles:
            t, o = self.decode_tiles
            lines.append(f"  decode: tiled, {t * 8} px tiles, {o * 8} px overlap (ZImageVAEDecode picks this)")
        else:
            lines.append("  decode: whole picture")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _load(free: int, weights: int, reserve_min: int, host: HostProfile) -> int:
    """Bytes of a model's weights ComfyUI keeps on the card (load_models_gpu, lowvram_model_memory)."""
    budget = max(0, free - reserve_min, int(min(free * host.lowvram_weight_ratio, free - host.inference_reserve)))
    return min(weights, budget)


def _evict(prev_on_gpu: int, free_total: int, need: int) -> int:
    """What stays of the previous model after free_memory(need): it is (partially) unloaded until need fits."""
    free = free_total - prev_on_gpu
    if free >= need:
        return prev_on_gpu
    return max(0, prev_on_gpu - (need - free))


def plan(te: ModelFile, dit: ModelFile, vae: ModelFile, vram: int, width: int = 1024, height: int = 1024,
         batch: int = 1, host: HostProfile = HostProfile(), weight_dtype: str = "default",
         prompt_tokens: int = DEFAULT_PROMPT_TOKENS, decode_tile: int | None = None,
         control_patch: ModelFile | None = None, patch_dtype: str = "default", cfg: float = 1.0,
         model: str = "turbo") -> Plan:
    """Peak VRAM of encode → sample → decode for these files on a card of `vram` bytes (see module doc).

    `cfg` > 1 (Z-Image Base; `model="base"` names Base's tier workflows): each step runs the positive and the
    negative; ComfyUI batches them into one call when memory_required(2B)·1.5 fits the free memory
    (samplers.calc_cond_batch), so the sample stage's activations are those of batch 2B, else two calls of B.

    `decode_tile`: force a tile size (latent units) for decode; None picks like ZImageVAEDecode.
    `control_patch`: a Fun ControlNet patch sampled with the DiT (`patch_dtype` its loader's weight_dtype):
    ComfyUI loads it beside the DiT in one load_models_gpu call, so the sample stage counts both models'
    weights, partial loading over their sum, and the control blocks' extra activations.
    """
    ds = host.compute_bytes
    free0 = vram - host.cuda_context  # what get_free_memory reports on an idle card
    stages: list[Stage] = []

    # encode: the TE alone on the card (ComfyUI's default reservation)
    te_w = resident_bytes(te, host)
    te_gpu = _load(free0, te_w, host.inference_reserve, host)
    te_d = te_dims(te)
    te_tr = 2 * te_d.max_matrix * ds if (_needs_cast(te, "default") or te_gpu < te_w) else 0
    stages.append(Stage("encode", te.name, te_w, te_gpu, te_activation_bytes(te_d, prompt_tokens, batch, ds), te_tr,
                        0, host.inference_reserve))

    # sample: the TE leaves (partially) before the DiT loads when both do not fit
    dit_w = resident_bytes(dit, host, weight_dtype, usable=free0 - host.inference_reserve)
    patch_w = resident_bytes(control_patch, host, patch_dtype) if control_patch else 0
    dit_w += patch_w
    req2 = comfy_dit_memory_required(width, height, 2 * batch, host)
    req1 = comfy_dit_memory_required(width, height, batch, host)
    extra = max(host.inference_reserve, req2 + host.extra_reserved)
    min_req = max(host.inference_reserve, req1 + host.extra_reserved)
    te_left = _evict(te_gpu, free0, int(dit_w * 1.1) + extra)
    te_left = _evict(te_left, free0, min_req)
    dit_gpu = _load(free0 - te_left, dit_w, min_req, host)
    dd = dit_dims(dit)
    dit_tr = 2 * dd.max_matrix * ds if (_needs_cast(dit, weight_dtype) or dit_gpu < dit_w) else 0
    cond_batched = cfg_batches_conds(cfg, req2, free0 - te_left - dit_gpu)
    dit_act = dit_activation_bytes(dd, width, height, batch * (2 if cond_batched else 1), prompt_tokens, ds)
    if control_patch:
        dit_tr = max(dit_tr, 2 * _max_matrix(control_patch) * ds if _needs_cast(control_patch, patch_dtype) else 0)
        img_tokens = math.ceil(height / 16) * math.ceil(width / 16)
        dit_act += batch * img_tokens * CONTROL_ACT_D_FACTOR * dd.dim * ds
    note = "TE unloaded" if te_left == 0 and te_gpu else ("TE partly unloaded" if te_left < te_gpu else "")
    if cfg != 1.0:
        note = ", ".join(filter(None, [note, "cfg>1: +/- batched (2x activations)" if cond_batched
                                      else "cfg>1: +/- in two calls"]))
    stages.append(Stage("sample", dit.name + (f" + {control_patch.name}" if control_patch else ""), dit_w, dit_gpu,
                        dit_act, dit_tr, te_left, min_req, note))

    # decode (ZImageVAEDecode): reserves the measured peak ×1.3 for the picture (whole) or one tile
    vae_w = resident_bytes(vae, host)
    vds = host.vae_bytes
    available = free0 - vae_w - host.extra_reserved
    tiles = pick_decode_tiles(width, height, available, vds, batch) if decode_tile is None else (
        decode_tile, min(32, max(4, decode_tile // 4)))
    if tiles is None:
        act = vae_decode_bytes(width, height, batch, vds)
        reservation = decode_reservation(width, height, batch, vds)
    else:
        side = tiles[0] * 8  # one tile of one picture at a time (decode_tiled_'s passes all have area ≤ t²)
        act = vae_decode_bytes(min(side, width), min(side, height), 1, vds)
        reservation = decode_reservation(min(side, width), min(side, height), 1, vds)
    dec_extra = max(host.inference_reserve, reservation + host.extra_reserved)
    dit_left = _evict(dit_gpu, free0, int(vae_w * 1.1) + dec_extra)
    dit_left = _evict(dit_left, free0, max(host.inference_reserve, reservation + host.extra_reserved))
    vae_gpu = _load(free0 - dit_left, vae_w, dec_extra, host)
    stages.append(Stage("decode", vae.name, vae_w, vae_gpu, act, 0, dit_left, reservation,
                        "tiled" if tiles else "whole"))

    p = Plan(vram, width, height, batch, te, dit, vae, stages, host, tiles, control_patch=control_patch)
    workflows = CONTROLNET_TIER_WORKFLOWS if control_patch else MODEL_TIER_WORKFLOWS[model]
    p.tier_gb = tier_for(vram, workflows)
    p.tier = workflows[p.tier_gb]
    p.workflow = tier_workflow_file(p.tier)
    return p


# ------------------------------------------------------------------------------------------ tiers/choices
# The card size each shipped tier workflow is built for -> its id (`extra.zimage_turbo.id` in workflows/).
TIER_WORKFLOWS = {6: "6gb", 8: "8gb", 12: "12gb", 24: "24gb"}


# The ControlNet workflows (canny variant named; depth/pose and inpaint ones exist for the same tiers).
CONTROLNET_TIER_WORKFLOWS = {6: "controlnet_canny_6gb", 12: "controlnet_canny_12gb"}


# Z-Image Base (cfg 4, 28 steps): 6-8 GB cards run unsloth's Q4_K_M GGUF DiT, 12 GB the bf16 file as fp8.
BASE_TIER_WORKFLOWS = {6: "base_6gb", 12: "base_12gb", 24: "base_24gb"}
MODEL_TIER_WORKFLOWS = {"turbo": TIER_WORKFLOWS, "base": BASE_TIER_WORKFLOWS}
MODEL_CFG = {"turbo": 1.0, "base": 4.0}  # the sampler presets' guidance (sampling/presets.py)


def cfg_batches_conds(cfg: float, memory_required_2b: int, free: int) -> bool:
    """Whether ComfyUI runs positive and negative in one call: cfg > 1 and memory_required(2B)·1.5 < free."""
    return cfg != 1.0 and memory_required_2b * 1.5 < free


@lru_cache(maxsize=None)
def tier_workflow_file(tier: str) -> str:
    """`workflows/<file name>` of the shipped workflow with this id ("" if the pack lacks it)."""
    path = find_workflow(tier)
    return f"workflows/{path.name}" if path else ""


def tier_for(vram: int, workflows: dict[int, str] = TIER_WORKFLOWS) -> int:
    """The largest tier whose card size is ≤ the VRAM (cards report slightly under their nominal size)."""
    gb = vram / GiB + 0.25
    fitting = [t for t in workflows if t <= gb]
    return max(fitting) if fitting else min(workflows)


def _rank(p: Plan) -> tuple:
    """Fits first; then the least streaming per sampling step (whole GB: 1 GB over PCIe ≈ 0.1 s per step),
    then no streaming of the TE; then the better DiT, the better TE; then less streaming, lower peak."""
    sample, encode = p.stage("sample"), p.stage("encode")
    return (p.fits, -math.ceil(sample.streamed / 1e9), not encode.offload, p.dit.quality, p.te.quality,
            -p.streamed_per_step, -p.peak)


@dataclass
class Choice:
    best: Plan | None
    candidates: list[Plan]
    missing: list[str]

    def report(self) -> str:
        if self.best is None:
            return "No plan: missing " + ", ".join(self.missing) + " (put the files in ComfyUI's models/ folders)."
        lines = ["Best combination:", self.best.table()]
        others = [p for p in self.candidates if p is not self.best][:5]
        if others:
            lines.append("Other combinations (peak GiB, streamed GB/step):")
            for p in others:
                lines.append(f"  {p.peak / GiB:5.2f} {p.streamed_per_step / 1e9:5.2f}  {'fits' if p.fits else 'NO  '}  "
                             f"{p.dit.name} + {p.te.name} + {p.vae.name}")
        return "\n".join(lines)


def choose(files: list[ModelFile], vram: int, width: int = 1024, height: int = 1024, batch: int = 1,
           host: HostProfile = HostProfile(), prompt_tokens: int = DEFAULT_PROMPT_TOKENS,
           control_patch: ModelFile | None = None, patch_dtype: str = "default", cfg: float = 1.0,
           model: str = "turbo") -> Choice:
    """Plan every TE × DiT × VAE combination of the files and pick the best (see `_rank`); with a
    `control_patch`, every plan samples with it (and names the ControlNet tier workflow)."""
    by_role = {r: [f for f in files if f.role == r] for r in ("te", "dit", "vae")}
    missing = [r for r, fs in by_role.items() if not fs]
    if missing:
        return Choice(None, [], missing)
    plans = [plan(te, dit, vae, vram, width, height, batch, host, prompt_tokens=prompt_tokens,
                  control_patch=control_patch, patch_dtype=patch_dtype, cfg=cfg, model=model)
             for dit in by_role["dit"] for te in by_role["te"] for vae in by_role["vae"]]
    plans.sort(key=_rank, reverse=True)
    return Choice(plans[0], plans, [])


def with_host(host: HostProfile, **changes) -> HostProfile:
    return replace(host, **changes)
