"""A Qwen tokenizer rebuilt from a GGUF's `tokenizer.ggml.*` metadata, and its check against ComfyUI's own.

llama.cpp's converter stores a byte-level BPE tokenizer as: `tokenizer.ggml.model` = "gpt2", `.pre` (which
pre-tokenizer regex to use, "qwen2" for Qwen2/Qwen3), `.tokens` (byte-level strings, one per embedding row,
with `[PADn]` fillers up to the padded vocabulary), `.token_type` (1 normal, 3 control, 4 user defined,
5 unused, …) and `.merges` ("a b" strings, in rank order). :func:`build_gguf_tokenizer` turns that into a
`transformers` fast tokenizer with the `tokenizers` library.

:func:`check_gguf_tokenizer` tokenizes a corpus (English, Chinese, emoji, numbers, long and empty prompts,
each inside Z-Image's chat template, exactly as ComfyUI tokenizes it) with both the GGUF tokenizer and
ComfyUI's bundled Qwen tokenizer and reports whether every id is the same.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Any

# GGUF token types (llama.cpp `llama_token_type`).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# Pre-tokenizer split patterns by `tokenizer.ggml.pre` (the regexes these tokenizer families are defined with).
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
PRE_TOKENIZERS: dict[str, tuple[str, bool]] = {  # pre -> (pattern, NFC normalisation)
    "qwen2": (QWEN2_PATTERN, True),
    "llama-bpe": (LLAMA3_PATTERN, False),
    "llama3": (LLAMA3_PATTERN, False),
    "gpt-2": (GPT2_PATTERN, False),
    "default": (GPT2_PATTERN, False),
}

ZIMAGE_TEMPLATE = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"  # as comfy.text_encoders.z_image

CORPUS: tuple[str, ...] = (
    "",
    "a photo of a cat",
    "A cinematic photo of an old fisherman mending nets at dawn, 35mm, shallow depth of field, golden light.",
    "一只橘猫坐在窗台上,窗外是下雨的上海街道,电影感,柔和的光线",
    "山水画:远山、近水、小舟与渔翁。水墨风格，留白。",
    "emoji party 🎉🐱🚀👩‍👩‍👧‍👦 ❤️ 🇯🇵 and 🍣🍜",
    "Mixed 中文 and English, with numbers 1234567 and 3.14159, prices $19.99, dates 2025-11-26.",
    "  leading and trailing spaces   \n\nnew lines\tand\ttabs  ",
    "Ünïcödé àccents, ß, Ελληνικά, русский текст, العربية, 日本語のテキスト, 한국어 텍스트",
    "code: def f(x): return x**2  # it's, we're, they'll, I'd, you've",
    "Ｆｕｌｌｗｉｄｔｈ ｃｈａｒｓ and combining e\u0301 vs \u00e9",
    ", ".join(["masterpiece", "best quality", "ultra detailed", "8k", "portrait of a woman", "red hair"] * 20),
    " ".join(f"word{i} 词{i}" for i in range(200)),
)


class GGUFTokenizerUnsupported(ValueError):
    """The GGUF's tokenizer metadata describes a tokenizer this pack cannot rebuild."""


def has_tokenizer(metadata: dict[str, Any]) -> bool:
    return "tokenizer.ggml.tokens" in metadata and "tokenizer.ggml.model" in metadata


def _as_list(value: Any) -> list:
    return value.tolist() if hasattr(value, "tolist") else list(value)


def build_gguf_tokenizer(metadata: dict[str, Any]):
    """A `transformers` fast tokenizer from `tokenizer.ggml.*` metadata (byte-level BPE only).

    Raises :class:`GGUFTokenizerUnsupported` for other tokenizer models or unknown pre-tokenizers.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    model = metadata.get("tokenizer.ggml.model")
    if model != "gpt2":
        raise GGUFTokenizerUnsupported(f"tokenizer model '{model}' (only byte-level BPE, 'gpt2', is supported)")
    pre = metadata.get("tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        raise GGUFTokenizerUnsupported(f"pre-tokenizer '{pre}' (known: {', '.join(sorted(PRE_TOKENIZERS))})")
    pattern, nfc = PRE_TOKENIZERS[pre]
    tokens = _as_list(metadata["tokenizer.ggml.tokens"])
    types = _as_list(metadata.get("tokenizer.ggml.token_type", [NORMAL] * len(tokens)))
    if len(types) != len(tokens):
        raise GGUFTokenizerUnsupported(f"{len(tokens)} tokens but {len(types)} token types")
    merges = [tuple(m.split(" ", 1)) for m in _as_list(metadata.get("tokenizer.ggml.merges", []))]
    if any(len(m) != 2 for m in merges):
        raise GGUFTokenizerUnsupported("a merge that is not two space-separated parts")

    vocab: dict[str, int] = {}
    added: list[tuple[int, str, bool]] = []
    for index, (token, kind) in enumerate(zip(tokens, types)):
        if kind == UNUSED:
            continue  # [PADn] fillers of the padded embedding table: never produced, never matched
        vocab.setdefault(token, index)
        if kind in (CONTROL, USER_DEFINED):
            added.append((index, token, kind == CONTROL))
    bpe = Tokenizer(BPE(vocab=vocab, merges=merges, dropout=None, unk_token=None, continuing_subword_prefix="",
                        end_of_word_suffix="", fuse_unk=False, byte_fallback=False))
    if nfc:
        bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    # Control and user-defined tokens are matched whole, before BPE, with the ids of the file (they are in
    # `vocab`, so adding them keeps their ids).
    bpe.add_tokens([AddedToken(t, special=s, normalized=False) for _, t, s in added if not s])
    bpe.add_special_tokens([AddedToken(t, special=True, normalized=False) for _, t, s in added if s])

    def token_of(key: str) -> str | None:
        idx = metadata.get(key)
        return tokens[int(idx)] if idx is not None and 0 <= int(idx) < len(tokens) else None

    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=token_of("tokenizer.ggml.eos_token_id"),
                                   pad_token=token_of("tokenizer.ggml.padding_token_id"), bos_token=None,
                                   clean_up_tokenization_spaces=False)


@functools.lru_cache(maxsize=1)
def bundled_tokenizer():
    """ComfyUI's bundled Qwen tokenizer (what `comfy.text_encoders.z_image.Qwen3Tokenizer` loads)."""
    from transformers import Qwen2Tokenizer
    return Qwen2Tokenizer.from_pretrained(bundled_tokenizer_dir())


def bundled_tokenizer_dir() -> str:
    """ComfyUI's `comfy/text_encoders/qwen25_tokenizer` folder (found without importing ComfyUI's models)."""
    import importlib.util
    spec = importlib.util.find_spec("comfy.text_encoders")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("ComfyUI's comfy.text_encoders package is not importable")
    return os.path.join(os.path.realpath(list(spec.submodule_search_locations)[0]), "qwen25_tokenizer")


def token_ids(tokenizer, prompt: str) -> list[int]:
    """Ids of a prompt inside Z-Image's template, as ComfyUI's SDTokenizer asks for them."""
    return list(tokenizer(ZIMAGE_TEMPLATE.format(prompt))["input_ids"])


@dataclass
class TokenizerCheck:
    """Outcome of comparing a GGUF's tokenizer with ComfyUI's bundled one."""
    status: str  # "absent", "unsupported", "match" or "differs"
    detail: str = ""
    mismatches: list[tuple[str, list[int], list[int]]] = field(default_factory=list)
    tokenizer: Any = None  # the GGUF tokenizer, when it could be built

    @property
    def matches(self) -> bool:
        return self.status == "match"


def check_gguf_tokenizer(metadata: dict[str, Any], corpus: tuple[str, ...] = CORPUS, reference=None) -> TokenizerCheck:
    """Rebuild the GGUF's tokenizer and compare its ids with ComfyUI's bundled tokenizer on `corpus`."""
    if not has_tokenizer(metadata):
        return TokenizerCheck("absent", "the file has no tokenizer.ggml.* metadata")
    try:
        tok = build_gguf_tokenizer(metadata)
    except GGUFTokenizerUnsupported as exc:
        return TokenizerCheck("unsupported", str(exc))
    reference = reference if reference is not None else bundled_tokenizer()
    mismatches = []
    for prompt in corpus:
        ours, theirs = token_ids(tok, prompt), token_ids(reference, prompt)
        if ours != theirs:
            mismatches.append((prompt, ours, theirs))
    if not mismatches:
        return TokenizerCheck("match", f"identical ids on {len(corpus)} test prompts", tokenizer=tok)
    prompt, ours, theirs = mismatches[0]
    at = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
    detail = (f"ids differ on {len(mismatches)} of {len(corpus)} test prompts; first: {prompt[:40]!r} at token {at}: "
              f"file {ours[at:at + 4]} vs ComfyUI {theirs[at:at + 4]}")
    return TokenizerCheck("differs", detail, mismatches, tok)
