"""Guards on the text encoder's CLIP classes: prompt length, and NaN/Inf in the conditioning it produces.

Prompt length: Z-Image reads at most MAX_PROMPT_TOKENS tokens (chat template included). Its DiT places the
caption at RoPE positions 1…N (padded to 32) and the picture just after, on an axis 1536 long: 1504 is the
longest caption that keeps the picture inside it. A longer prompt is **refused** with a message giving its
length and the limit, never truncated silently (the end of a prompt changes the picture). A string of more
than MAX_PROMPT_CHARS characters (16 per token allowed, beyond any real prompt's) is refused before it is
tokenized, so a pasted megabyte costs nothing (it made the encoder allocate 0.9 GB for 100 KB, 360 GB for
1 MB: its attention mask grows with the square of the length).

NaN/Inf: one reduction over the encoder's output; a damaged encoder stops at CLIPTextEncode, naming the
stage, instead of reaching the sampler (whose guard also checks what it is given, from any encoder).

Both apply to every CLIP the pack's loaders build (safetensors and GGUF encoders, both tokenizers): the
loader passes its classes through :func:`guarded_classes`.
"""
from __future__ import annotations

import functools

import torch

from ..sampling.guards import NonFiniteError, has_non_finite

MAX_PROMPT_TOKENS = 1504
MAX_CHARS_PER_TOKEN = 16
MAX_PROMPT_CHARS = MAX_PROMPT_TOKENS * MAX_CHARS_PER_TOKEN


class PromptTooLongError(ValueError):
    """A prompt longer than the text encoder's limit (refused, not truncated)."""


def check_prompt_chars(text) -> None:
    """Refuse, before tokenizing, a string no prompt within the token limit can be."""
    if isinstance(text, str) and len(text) > MAX_PROMPT_CHARS:
        raise PromptTooLongError(
            f"the prompt is {len(text):,} characters long; Z-Image's text encoder takes prompts of at most "
            f"{MAX_PROMPT_TOKENS} tokens, so prompts over {MAX_PROMPT_CHARS:,} characters are refused before "
            f"tokenizing: shorten it.")


def token_count(tokens: dict) -> int:
    """Tokens of a tokenizer's output ({encoder name: [batch of (token, weight…)]})."""
    return max((sum(len(batch) for batch in batches) for batches in tokens.values()), default=0)


def check_prompt_tokens(tokens: dict, text) -> None:
    count = token_count(tokens)
    if count > MAX_PROMPT_TOKENS:
        chars = f" ({len(text):,} characters)" if isinstance(text, str) else ""
        raise PromptTooLongError(
            f"the prompt is {count:,} tokens long{chars}; Z-Image reads at most {MAX_PROMPT_TOKENS} tokens, chat "
            f"template included (the diffusion model's caption positions end there): shorten it.")


def limited_tokenizer(base: type):
    """A factory of `base` tokenizers (a Z-Image tokenizer class) refusing prompts over the limit. The
    instances keep their class (code that tells the bundled tokenizer from the GGUF's by type still can)."""

    def make(*args, **kwargs):
        tokenizer = base(*args, **kwargs)
        tokenize = tokenizer.tokenize_with_weights

        def tokenize_with_weights(text, return_word_ids=False, **options):
            check_prompt_chars(text)
            tokens = tokenize(text, return_word_ids, **options)
            check_prompt_tokens(tokens, text)
            return tokens

        tokenizer.tokenize_with_weights = tokenize_with_weights
        return tokenizer

    return make


@functools.lru_cache(maxsize=64)
def checked_encoder_class(base: type) -> type:
    """`base` (a Z-Image text-encoder model class) whose conditioning is checked for NaN/Inf."""

    class CheckedEncoder(base):
        def encode_token_weights(self, token_weight_pairs):
            out = super().encode_token_weights(token_weight_pairs)
            cond = out[0] if isinstance(out, (tuple, list)) else out
            if isinstance(cond, torch.Tensor) and has_non_finite(cond):
                raise NonFiniteError(
                    "the text encoder produced NaN/Inf conditioning: its weights hold NaN/Inf (the file is "
                    "damaged; download it again) or its activations overflowed in float16 (start ComfyUI with "
                    "--fp32-text-enc).")
            return out

    CheckedEncoder.__name__ = CheckedEncoder.__qualname__ = base.__name__
    return CheckedEncoder


def guarded_classes(clip_class: type, tokenizer_class: type) -> tuple:
    """The (encoder class, tokenizer factory) a Z-Image CLIP is built from, with the guards above."""
    return checked_encoder_class(clip_class), limited_tokenizer(tokenizer_class)
