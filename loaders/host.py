"""The few places where supported ComfyUI versions (0.3.75 … 0.30.x) differ, behind one function each."""
from __future__ import annotations

import inspect

import torch


def set_inference_dtype(model_config, unet_dtype, manual_cast_dtype, device) -> None:
    """`BASE.set_inference_dtype` (newer hosts also take the load device)."""
    if "device" in inspect.signature(model_config.set_inference_dtype).parameters:
        model_config.set_inference_dtype(unet_dtype, manual_cast_dtype, device=device)
    else:
        model_config.set_inference_dtype(unet_dtype, manual_cast_dtype)


def new_model_patcher(model: torch.nn.Module, load_device, offload_device, dynamic: bool = True):
    """The host's default patcher (`CoreModelPatcher`, dynamic VRAM where enabled) or the legacy `ModelPatcher`."""
    import comfy.model_patcher as mp
    cls = getattr(mp, "CoreModelPatcher", mp.ModelPatcher) if dynamic else mp.ModelPatcher
    return cls(model, load_device=load_device, offload_device=offload_device)


def patcher_assigns(patcher) -> bool:
    """Whether weights must be assigned (dynamic patchers) rather than copied into allocated parameters."""
    is_dynamic = getattr(patcher, "is_dynamic", None)
    return bool(is_dynamic()) if callable(is_dynamic) else False


def new_clip(target, state_dict: dict, parameters: int, model_options: dict):
    """`comfy.sd.CLIP` with weights loaded (older hosts take no `state_dict` argument: load afterwards)."""
    import comfy.sd
    if "state_dict" in inspect.signature(comfy.sd.CLIP.__init__).parameters:
        return comfy.sd.CLIP(target, parameters=parameters, state_dict=[state_dict], model_options=model_options)
    clip = comfy.sd.CLIP(target, parameters=parameters, model_options=model_options)
    clip.load_sd(state_dict)
    return clip


def supported_unet_config(unet_class, config: dict) -> dict:
    """Drop config keys the host's model class does not take (older NextDiT has no **kwargs)."""
    params = inspect.signature(unet_class.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return config
    return {k: v for k, v in config.items() if k in params or k in ("image_model",)}
