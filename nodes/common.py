"""Shared bits of node declarations: categories, search aliases, and the model folders the loaders list."""
from __future__ import annotations

import os

CATEGORY_LOADERS = "Z-Image Turbo/loaders"
CATEGORY_SAMPLING = "Z-Image Turbo/sampling"

# Words users type into the node search; ComfyUI matches them besides the display name.
SEARCH_ALIASES = ["z-image", "zimage", "z image", "turbo", "lumina2"]

GGUF_EXTENSION = ".gguf"
# The pack's own folder keys for .gguf files, over the same folders as core's key (the convention of GGUF
# packs, so with ComfyUI-GGUF installed both use one entry). Core's keys and extension sets stay untouched:
# core UNETLoader / CLIPLoader never list a .gguf they cannot load. Extra sub-folders of models/ follow.
GGUF_FOLDERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "unet_gguf": ("diffusion_models", ()),
    "clip_gguf": ("text_encoders", ("clip_gguf",)),  # models/clip_gguf: where this pack listed TE GGUFs before
    "model_patches_gguf": ("model_patches", ()),  # Z-Image Fun ControlNet patches quantized to GGUF
}
_OWN_PATHS: dict[str, list[str]] = {}  # key -> the path list this pack registered (kept in step with core's)


def _wanted_paths(key: str) -> list[str]:
    import folder_paths
    core, extra = GGUF_FOLDERS[key]
    paths = list(folder_paths.folder_names_and_paths.get(core, ([], set()))[0])
    return paths + [p for p in (os.path.join(folder_paths.models_dir, d) for d in extra) if p not in paths]


def register_gguf_folders() -> None:
    """Register the pack's `.gguf` folder keys (cheap: no file is listed). Runs when the nodes are imported,
    so the first `/object_info` of a fresh server already lists every .gguf file.

    A key another pack registered first is left as it is (it lists the same folders). A key of this pack's
    follows later changes of core's folders (extra model paths, tests) each time the loaders list files.
    """
    import folder_paths
    for key in GGUF_FOLDERS:
        entry = folder_paths.folder_names_and_paths.get(key)
        own = _OWN_PATHS.get(key)
        if entry is None:
            own = _OWN_PATHS[key] = _wanted_paths(key)
            folder_paths.folder_names_and_paths[key] = (own, {GGUF_EXTENSION})
        elif entry[0] is own:
            wanted = _wanted_paths(key)
            if own != wanted:
                own[:] = wanted  # in place: ComfyUI's cache sees the new folder list and rescans


def model_files(*folders: str) -> list[str]:
    """File names ComfyUI lists in the given model folders (first folder first, no duplicates)."""
    import folder_paths
    register_gguf_folders()
    names: list[str] = []
    for folder in folders:
        try:
            names += [n for n in folder_paths.get_filename_list(folder) if n not in names]
        except KeyError:
            continue
    return names


def find_model(name: str, *folders: str) -> str | None:
    """Full path of a file in the first of the model folders that has it, or None."""
    import folder_paths
    for folder in folders:
        try:
            path = folder_paths.get_full_path(folder, name)
        except KeyError:
            continue
        if path:
            return path
    return None


def model_path(name: str, *folders: str) -> str:
    """Full path of a listed file, searching the folders in order; a clear error when it is gone."""
    register_gguf_folders()
    path = find_model(name, *folders)
    if path:
        return path
    shown = list(dict.fromkeys(d for f in folders for d in
                               ((GGUF_FOLDERS[f][0], *GGUF_FOLDERS[f][1]) if f in GGUF_FOLDERS else (f,))))
    raise FileNotFoundError(f"{name}: not found in models/{' or models/'.join(shown)}. "
                            "Put the file there and press 'r' in ComfyUI to refresh the lists.")
