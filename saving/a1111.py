"""A1111-style `parameters` text (what Civitai and other galleries read), built from a ComfyUI API prompt."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..sampling.presets import PRESETS

SAMPLER_NODES = ("ZImageTurboSampler", "KSampler")
TEXT_NODES = ("CLIPTextEncode",)
# Loader inputs naming the model, walked upstream from a sampler's `model` input.
MODEL_NAME_INPUTS = ("unet_name", "ckpt_name")
# A1111 names of ComfyUI samplers/schedulers where they differ.
SAMPLER_LABELS = {"euler": "Euler", "euler_ancestral": "Euler a", "res_multistep": "Res Multistep",
                  "dpmpp_2m": "DPM++ 2M", "heun": "Heun", "lms": "LMS", "ddim": "DDIM"}
SCHEDULE_LABELS = {"simple": "Simple", "karras": "Karras", "beta": "Beta", "normal": "Normal",
                   "sgm_uniform": "SGM Uniform", "exponential": "Exponential", "lowstep": "Lowstep"}


@dataclass
class GenerationParameters:
    """What a gallery wants to know about one picture."""
    positive: str = ""
    negative: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    def to_text(self) -> str:
        """`prompt\\nNegative prompt: …\\nSteps: 8, Sampler: Euler, …` (A1111's layout)."""
        lines = [self.positive]
        if self.negative:
            lines.append(f"Negative prompt: {self.negative}")
        lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in self.settings.items()))
        return "\n".join(lines)


def _quote(value: Any) -> str:
    text = str(value)
    return f'"{text}"' if any(c in text for c in ',:\n"') else text


def parse_parameters(text: str) -> GenerationParameters:
    """Parse A1111 `parameters` text (the inverse of to_text; also reads files A1111 wrote)."""
    lines = text.split("\n")
    settings_line = lines[-1] if len(lines) > 1 else ""
    body = lines[:-1] if len(lines) > 1 else lines
    negative_at = next((i for i, l in enumerate(body) if l.startswith("Negative prompt: ")), None)
    positive = "\n".join(body[:negative_at] if negative_at is not None else body)
    negative = "\n".join(body[negative_at:])[len("Negative prompt: "):] if negative_at is not None else ""
    settings: dict[str, str] = {}
    i, n = 0, len(settings_line)
    while i < n:
        colon = settings_line.index(": ", i)
        key = settings_line[i:colon].strip()
        j = colon + 2
        if j < n and settings_line[j] == '"':
            end = settings_line.index('"', j + 1)
            value, i = settings_line[j + 1:end], end + 1
        else:
            end = settings_line.find(",", j)
            end = n if end < 0 else end
            value, i = settings_line[j:end], end
        settings[key] = value
        while i < n and settings_line[i] in ", ":
            i += 1
    return GenerationParameters(positive, negative, settings)


def _follow(prompt: dict, ref: Any) -> dict | None:
    return prompt.get(str(ref[0])) if isinstance(ref, list) and len(ref) == 2 else None


def _text_of(prompt: dict, ref: Any, depth: int = 0) -> str:
    node = _follow(prompt, ref)
    if node is None or depth > 20:
        return ""
    if node["class_type"] in TEXT_NODES:
        text = node["inputs"].get("text", "")
        return text if isinstance(text, str) else _text_of(prompt, text, depth + 1)
    for value in node["inputs"].values():  # conditioning passed through another node
        if isinstance(value, list) and (found := _text_of(prompt, value, depth + 1)):
            return found
    return ""


def _model_name(prompt: dict, ref: Any, depth: int = 0) -> str | None:
    node = _follow(prompt, ref)
    if node is None or depth > 50:
        return None
    for key in MODEL_NAME_INPUTS:
        if isinstance(node["inputs"].get(key), str):
            return node["inputs"][key]
    return _model_name(prompt, node["inputs"].get("model"), depth + 1)


def find_sampler(prompt: dict) -> tuple[str, dict] | None:
    """The first sampler node of the prompt (node ids in numeric order)."""
    for node_id in sorted(prompt, key=lambda k: (len(k), k)):
        if prompt[node_id]["class_type"] in SAMPLER_NODES:
            return node_id, prompt[node_id]
    return None


def with_preset(inputs: dict) -> dict:
    """The sampler inputs with a ZImageTurboSampler `preset` (turbo/base) applied: what it sampled with."""
    preset = PRESETS.get(inputs.get("preset")) if isinstance(inputs.get("preset"), str) else None
    if preset is None:
        return inputs
    return {**inputs, "steps": preset.steps, "cfg": preset.cfg, "shift": preset.shift,
            "sampler_name": preset.sampler_name, "scheduler": preset.scheduler}


def parameters_from_prompt(prompt: dict, width: int, height: int, model_hash=None) -> list[GenerationParameters]:
    """Parameters per image of the batch (seed + i), or [] when the prompt has no sampler.

    `model_hash(name) -> str | None` supplies the short model hash (A1111's AutoV2, first 10 hex of sha256).
    """
    found = find_sampler(prompt)
    if found is None:
        return []
    _, sampler = found
    inputs = with_preset(sampler["inputs"])
    model = _model_name(prompt, inputs.get("model"))
    cfg = inputs.get("cfg", 1.0)
    base = {
        "Steps": inputs.get("steps"), "Sampler": SAMPLER_LABELS.get(inputs.get("sampler_name"), inputs.get("sampler_name")),
        "Schedule type": SCHEDULE_LABELS.get(inputs.get("scheduler"), inputs.get("scheduler")),
        "CFG scale": cfg, "Seed": None, "Size": f"{width}x{height}",
    }
    if model:
        digest = model_hash(model) if model_hash else None
        if digest:
            base["Model hash"] = digest
        base["Model"] = model.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    if isinstance(inputs.get("denoise"), (int, float)) and inputs["denoise"] < 1:
        base["Denoising strength"] = inputs["denoise"]
    if "shift" in inputs:
        base["Shift"] = inputs["shift"]
    if isinstance(inputs.get("variety"), (int, float)) and inputs["variety"] > 0:
        base["Seed variety"] = f"{inputs['variety']:g} until {inputs.get('variety_until', 0.3):g}"
    positive = _text_of(prompt, inputs.get("positive"))
    negative = _text_of(prompt, inputs.get("negative")) if isinstance(cfg, (int, float)) and cfg != 1 else ""
    seed = inputs.get("seed", inputs.get("noise_seed", 0))
    batch = inputs.get("batch_size", 1) if not isinstance(inputs.get("latent_image"), list) else 1
    return [GenerationParameters(positive, negative, {**base, "Seed": seed + i if isinstance(seed, int) else seed,
                                                      "Version": "ComfyUI-ZImage-Turbo"})
            for i in range(max(1, batch if isinstance(batch, int) else 1))]
