"""Shared bits of node declarations."""
from __future__ import annotations

CATEGORY_LOADERS = "Z-Image Turbo/loaders"
CATEGORY_SAMPLING = "Z-Image Turbo/sampling"


GGUF_EXTENSION = ".gguf"


def accept_gguf(*folders: str) -> None:
    """Let ComfyUI list .gguf files in these model folders (it only lists its own extensions by default)."""
    import folder_paths
    for folder in folders:
        entry = folder_paths.folder_names_and_paths.get(folder)
        if entry is None:
            continue
        paths, extensions = entry
        if GGUF_EXTENSION not in extensions:
            extensions = set(extensions) | {GGUF_EXTENSION}
            folder_paths.folder_names_and_paths[folder] = (paths, extensions)
            getattr(folder_paths, "filename_list_cache", {}).pop(folder, None)


def model_files(*folders: str) -> list[str]:
    """File names ComfyUI lists in the given model folders (first folder first, no duplicates)."""
    import folder_paths
    accept_gguf(*folders)
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
    accept_gguf(*folders)
    path = find_model(name, *folders)
    if path:
        return path
    raise FileNotFoundError(f"{name}: not found in models/{' or models/'.join(folders)}. "
                            "Put the file there and press 'r' in ComfyUI to refresh the lists.")
