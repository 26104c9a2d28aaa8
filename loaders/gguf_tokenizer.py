"""A Qwen tokenizer rebuilt from a GGUF's `tokenizer.ggml.*` metadata, and its check against ComfyUI's own.

llama.cpp's converter stores a byte-level BPE tokenizer as: `tokenizer.ggml.model` = "gpt2", `.pre` (which
pre-tokenizer regex to use, "qwen2" for Qwen2/Qwen3), `.tokens` (byte-level strings, one per embedding row,
with `[PADn]` fillers up to the padded vocabulary), `.token_type` (1 normal, 3 control, 4 user defined,
5 unused, …) and `.merges` ("a b" strings, in rank order). :func:`build_gguf_tokenizer` turns that into a
`transformers` fast tokenizer with the `tokenizers` library.

:func:`check_gguf_tokenizer` tokenizes a corpus (English, Chinese, emoji, numbers, long and empty prompts,
each inside Z-Image's chat template, exactly as ComfyUI tokenizes it) with both the GGUF tokenizer and
ComfyUI's bundled Qwen tokenizer and reports whether every id is the same.

The metadata is checked before the `tokenizers` library sees it (:func:`read_tokenizer_metadata`: types,
lengths, merges naming tokens of the vocabulary, ids in range), so the library's own errors ("Error while
initializing BPE", PyO3 "failed to extract enum", Rust panics) never reach a user; they are still caught
as a backstop.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .metadata import BadMetadata, read_int, read_int_array, read_string, read_string_array

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
    """The GGUF's tokenizer metadata describes a tokenizer this pack cannot rebuild (`key`: the key saying so)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


TOKENS, TYPES, MERGES = "tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges"
MODEL, PRE = "tokenizer.ggml.model", "tokenizer.ggml.pre"
EOS, PADDING = "tokenizer.ggml.eos_token_id", "tokenizer.ggml.padding_token_id"
MAX_TOKENS = 1 << 22  # tokens (and merges) a tokenizer may have when the embedding does not say otherwise


def has_tokenizer(metadata: Mapping[str, Any]) -> bool:
    return TOKENS in metadata and MODEL in metadata


@dataclass(frozen=True)
class TokenizerData:
    """The checked `tokenizer.ggml.*` metadata of a byte-level BPE tokenizer."""
    tokens: Sequence[str]
    vocab: dict[str, int]  # token -> id, without UNUSED fillers
    added: list[tuple[str, bool]]  # (token, special) for CONTROL / USER_DEFINED tokens
    merges: list[tuple[str, str]]
    pre: str
    eos_id: int | None
    pad_id: int | None


def read_tokenizer_metadata(metadata: Mapping[str, Any], rows: int | None = None) -> TokenizerData:
    """Check the tokenizer metadata before any library sees it.

    Raises :class:`GGUFTokenizerUnsupported` for a tokenizer of another kind (not byte-level BPE, an unknown
    pre-tokenizer) and :class:`~.metadata.BadMetadata` (naming the key) for values of the wrong type, tokens
    beyond the `rows` of the embedding table, token types of another length, merges naming tokens not in the
    vocabulary, or special-token ids out of range.
    """
    model = read_string(metadata, MODEL)
    if model != "gpt2":
        raise GGUFTokenizerUnsupported(f"tokenizer model '{model[:40]}' (only byte-level BPE, 'gpt2', is supported)",
                                       MODEL)
    pre = read_string(metadata, PRE, default="default")
    if pre not in PRE_TOKENIZERS:
        raise GGUFTokenizerUnsupported(f"pre-tokenizer '{pre[:40]}' (known: {', '.join(sorted(PRE_TOKENIZERS))})", PRE)
    limit = MAX_TOKENS if rows is None else min(rows, MAX_TOKENS)
    tokens = read_string_array(metadata, TOKENS, min_length=1, max_length=limit,
                               what="strings (at most one per embedding row)" if rows is not None else "strings")
    types = read_int_array(metadata, TYPES, len(tokens), default=None)
    vocab: dict[str, int] = {}
    added: list[tuple[str, bool]] = []
    for index, token in enumerate(tokens):
        kind = NORMAL if types is None else int(types[index])
        if kind == UNUSED:
            continue  # [PADn] fillers of the padded embedding table: never produced, never matched
        vocab.setdefault(token, index)
        if kind in (CONTROL, USER_DEFINED):
            added.append((token, kind == CONTROL))
    merges = [_merge(vocab, index, text)
              for index, text in enumerate(read_string_array(metadata, MERGES, max_length=MAX_TOKENS, default=()))]
    eos, pad = (read_int(metadata, key, 0, len(tokens) - 1, default=None, agreement="(a token id of the file)")
                for key in (EOS, PADDING))
    return TokenizerData(tokens, vocab, added, merges, pre, eos, pad)


def _merge(vocab: dict[str, int], index: int, text: str) -> tuple[str, str]:
    """One "a b" merge whose parts and result are in the vocabulary (what the BPE library requires)."""
    left, space, right = text.partition(" ")
    missing = next((t for t in (left, right, left + right) if t not in vocab), None) if left and right else None
    if not space or not left or not right or missing is not None:
        what = (f"'{missing[:40]}', which is not in the vocabulary" if missing is not None
                else "not two space-separated tokens")
        raise BadMetadata(MERGES, "an array of \"a b\" merges of tokens in the vocabulary",
                          f"merge {index} {text[:40]!r}: {what}")
    return left, right


def _library_error(exc: BaseException) -> GGUFTokenizerUnsupported:
    """The tokenizers library refused data that passed the checks (a backstop: Rust panics included)."""
    if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
        raise exc
    reason = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
    return GGUFTokenizerUnsupported(f"a tokenizer the tokenizers library refuses ({reason})")


def build_gguf_tokenizer(metadata: Mapping[str, Any], rows: int | None = None):
    """A `transformers` fast tokenizer from `tokenizer.ggml.*` metadata (byte-level BPE only).

    Raises :class:`GGUFTokenizerUnsupported` for other tokenizer models, unknown pre-tokenizers or data the
    library refuses, and :class:`~.metadata.BadMetadata` for malformed values (see
    :func:`read_tokenizer_metadata`).
    """
    data = read_tokenizer_metadata(metadata, rows)
    try:
        return _build(data)
    except BaseException as exc:  # noqa: BLE001 - PyO3 panics derive from BaseException
        raise _library_error(exc) from None


def _build(data: TokenizerData):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    pattern, nfc = PRE_TOKENIZERS[data.pre]
    bpe = Tokenizer(BPE(vocab=data.vocab, merges=data.merges, dropout=None, unk_token=None,
                        continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False, byte_fallback=False))
    if nfc:
        bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    # Control and user-defined tokens are matched whole, before BPE, with the ids of the file (they are in
    # `vocab`, so adding them keeps their ids).
    bpe.add_tokens([AddedToken(t, special=s, normalized=False) for t, s in data.added if not s])
    bpe.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, s in data.added if s])

    def token_of(index: int | None) -> str | None:
        return data.tokens[index] if index is not None else None

    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=token_of(data.eos_id),
                                   pad_token=token_of(data.pad_id), bos_token=None,
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


@functools.lru_cache(maxsize=len(CORPUS))
def _bundled_ids(prompt: str) -> tuple[int, ...]:
    """`token_ids` of ComfyUI's bundled (slow, Python) tokenizer, computed once per prompt."""
    return tuple(token_ids(bundled_tokenizer(), prompt))


@functools.lru_cache(maxsize=1)
def bundled_id_count() -> int:
    """How many ids ComfyUI's bundled Qwen tokenizer can emit (151669): its added tokens come after its BPE
    vocabulary, so the highest added id + 1. Read from tokenizer_config.json (8 KB), not by loading it."""
    import json
    with open(os.path.join(bundled_tokenizer_dir(), "tokenizer_config.json"), encoding="utf-8") as f:
        added = json.load(f)["added_tokens_decoder"]
    return max(int(i) for i in added) + 1


@dataclass
class TokenizerCheck:
    """Outcome of comparing a GGUF's tokenizer with ComfyUI's bundled one."""
    status: str  # "absent", "unsupported", "invalid" (malformed metadata), "match" or "differs"
    detail: str = ""
    mismatches: list[tuple[str, list[int], list[int]]] = field(default_factory=list)
    tokenizer: Any = None  # the GGUF tokenizer, when it could be built
    error: BadMetadata | None = None  # for "invalid": the key at fault and what it holds
    key: str | None = None  # the metadata key at fault ("invalid", "unsupported"), when one is
    pad_id: int | None = None  # the file's padding (else end-of-text) token id, when it has one

    @property
    def matches(self) -> bool:
        return self.status == "match"


def check_gguf_tokenizer(metadata: Mapping[str, Any], corpus: tuple[str, ...] = CORPUS, reference=None,
                         rows: int | None = None) -> TokenizerCheck:
    """Rebuild the GGUF's tokenizer (checking its metadata against the `rows` of the embedding table) and
    compare its ids with ComfyUI's bundled tokenizer on `corpus`. Never raises for any metadata value."""
    if not has_tokenizer(metadata):
        return TokenizerCheck("absent", "the file has no tokenizer.ggml.* metadata")
    try:
        data = read_tokenizer_metadata(metadata, rows)
        tok = _build(data)
        pairs = [(prompt, token_ids(tok, prompt),
                  token_ids(reference, prompt) if reference is not None else list(_bundled_ids(prompt)))
                 for prompt in corpus]
    except GGUFTokenizerUnsupported as exc:
        return TokenizerCheck("unsupported", str(exc), key=exc.key)
    except BadMetadata as exc:
        return TokenizerCheck("invalid", str(exc), error=exc, key=exc.key)
    except BaseException as exc:  # noqa: BLE001 - the library's own refusals (PyO3 panics are BaseException)
        return TokenizerCheck("unsupported", str(_library_error(exc)))
    pad_id = data.pad_id if data.pad_id is not None else data.eos_id
    mismatches = [(prompt, ours, theirs) for prompt, ours, theirs in pairs if ours != theirs]
    if not mismatches:
        return TokenizerCheck("match", f"identical ids on {len(corpus)} test prompts", tokenizer=tok, pad_id=pad_id)
    prompt, ours, theirs = mismatches[0]
    at = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
    detail = (f"ids differ on {len(mismatches)} of {len(corpus)} test prompts; first: {prompt[:40]!r} at token {at}: "
              f"file {ours[at:at + 4]} vs ComfyUI {theirs[at:at + 4]}")
    return TokenizerCheck("differs", detail, mismatches, tok, pad_id=pad_id)
