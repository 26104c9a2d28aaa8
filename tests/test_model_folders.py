"""The pack's loaders list every .gguf file from the first /object_info on, and core's loaders never do.

`/object_info` runs every node's INPUT_TYPES under `folder_paths.cache_helper`, which keeps the first listing of
each folder key for the whole request: core UNETLoader / CLIPLoader list `diffusion_models` / `text_encoders`
first, with core's extensions. The pack therefore lists .gguf files through keys of its own (`unet_gguf`,
`clip_gguf`) over the same folders, registered when its nodes are imported.
"""
from __future__ import annotations

import pytest


@pytest.fixture
def models(comfy_host, tmp_path, monkeypatch):
    """A models folder holding a safetensors and a GGUF of each kind, as ComfyUI's only model folders."""
    import folder_paths
    from zimage_turbo.nodes import common
    files = {"diffusion_models": ["z_image_turbo_bf16.safetensors", "z_image_turbo-Q4_K_M.gguf"],
             "text_encoders": ["qwen_3_4b.safetensors", "Qwen3-4B-Q4_K_M.gguf"]}
    for folder, names in files.items():
        (tmp_path / folder).mkdir()
        for name in names:
            (tmp_path / folder / name).write_bytes(b"x")
        _, extensions = folder_paths.folder_names_and_paths[folder]
        monkeypatch.setitem(folder_paths.folder_names_and_paths, folder, ([str(tmp_path / folder)], extensions))
    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    common.register_gguf_folders()  # follows core's folders (here: the test's)
    return files


def _choices(node_class, name: str) -> list[str]:
    return node_class.INPUT_TYPES()["required"][name][0]


def test_first_object_info_lists_gguf_in_pack_loaders_only(models):
    import folder_paths
    import nodes
    from zimage_turbo.nodes.diffusion_model import ZImageDiffusionModelLoader
    from zimage_turbo.nodes.text_encoder import ZImageTextEncoderLoader
    for _ in range(2):  # the first request (fresh server) and every later one
        with folder_paths.cache_helper:  # as /object_info: core's loaders come first
            core_unet = _choices(nodes.UNETLoader, "unet_name")
            core_clip = _choices(nodes.CLIPLoader, "clip_name")
            pack_dit = _choices(ZImageDiffusionModelLoader, "unet_name")
            pack_te = _choices(ZImageTextEncoderLoader, "text_encoder_name")
        assert pack_dit == models["diffusion_models"]
        assert pack_te == models["text_encoders"]
        assert core_unet == ["z_image_turbo_bf16.safetensors"]
        assert core_clip == ["qwen_3_4b.safetensors"]
    assert ".gguf" not in folder_paths.folder_names_and_paths["diffusion_models"][1]
    assert ".gguf" not in folder_paths.folder_names_and_paths["text_encoders"][1]


def test_gguf_keys_follow_core_folders_and_leave_other_packs_keys(models, tmp_path, monkeypatch):
    import folder_paths
    from zimage_turbo.nodes import common
    extra = tmp_path / "extra_unet"
    extra.mkdir()
    (extra / "other-Q8_0.gguf").write_bytes(b"x")
    folder_paths.add_model_folder_path("diffusion_models", str(extra))  # e.g. extra_model_paths.yaml
    assert "other-Q8_0.gguf" in common.model_files("diffusion_models", "unet_gguf")
    theirs = ([str(tmp_path / "elsewhere")], {".gguf"})  # a GGUF pack registered the key first
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "clip_gguf", theirs)
    common.register_gguf_folders()
    assert folder_paths.folder_names_and_paths["clip_gguf"] is theirs
    assert theirs[0] == [str(tmp_path / "elsewhere")]


def test_missing_file_names_the_folders(models):
    from zimage_turbo.nodes.common import model_path
    with pytest.raises(FileNotFoundError, match="gone.gguf: not found in models/text_encoders or models/clip_gguf"):
        model_path("gone.gguf", "text_encoders", "clip_gguf")


def test_pack_nodes_have_search_aliases(comfy_host):
    from zimage_turbo.nodes import NODE_CLASS_MAPPINGS
    for name, cls in NODE_CLASS_MAPPINGS.items():
        assert {"z-image", "zimage", "turbo"} <= set(cls.SEARCH_ALIASES), name
    assert {"gguf", "qwen3", "text encoder"} <= set(NODE_CLASS_MAPPINGS["ZImageTextEncoderLoader"].SEARCH_ALIASES)
    assert "gguf" in NODE_CLASS_MAPPINGS["ZImageDiffusionModelLoader"].SEARCH_ALIASES
