"""ZImageVAEDecode: whole when it fits, tiled (auto tile/overlap) when not; tiled output has no seams."""
from __future__ import annotations

import pytest
import torch

from zimage_turbo.planner import estimate as E


@pytest.fixture(scope="module")
def vae_and_latent(comfy_host, tiny_paths):
    from zimage_turbo.loaders.vae import load_flux_vae
    with torch.inference_mode():
        vae = load_flux_vae(tiny_paths["vae"])
    g = torch.Generator().manual_seed(0)
    # a smooth latent (what a sampler produces looks like this, not like white noise): 128×128 px picture
    latent = torch.nn.functional.interpolate(torch.randn(1, 16, 4, 4, generator=g), size=(16, 16), mode="bicubic",
                                             align_corners=True)
    with torch.inference_mode():
        whole = vae.decode(latent)
    return vae, latent, whole


def test_auto_policy_whole_or_tiles():
    assert E.pick_decode_tiles(1024, 1024, 8 * E.GiB, ds=2) is None  # 1.36 GB ×1.3 fits
    tile, overlap = E.pick_decode_tiles(2048, 2048, 3 * E.GiB, ds=2)  # 5.4 GB does not
    assert tile % 8 == 0 and 16 <= tile < 256 and overlap == min(32, tile // 4)
    assert E.vae_decode_bytes(tile * 8, tile * 8, 1, 2) * E.DECODE_SAFETY <= 3 * E.GiB
    assert E.vae_decode_bytes((tile + 8) * 8, (tile + 8) * 8, 1, 2) * E.DECODE_SAFETY > 3 * E.GiB  # largest fitting


def test_node_decodes_whole_when_it_fits(vae_and_latent, monkeypatch):
    from zimage_turbo.nodes.vae_decode import ZImageVAEDecode
    from zimage_turbo.planner import decode as D
    vae, latent, whole = vae_and_latent
    real_plan, seen = D.plan_decode, []
    monkeypatch.setattr(D, "plan_decode", lambda *a, **k: seen.append(real_plan(*a, **k)) or seen[-1])
    with torch.inference_mode():
        (image,) = ZImageVAEDecode().decode({"samples": latent}, vae)  # CPU: free RAM is the budget
    assert seen == [None] and image.shape == (1, 128, 128, 3)
    assert torch.equal(image, whole)


def test_tiled_matches_whole_without_seams(vae_and_latent, monkeypatch):
    """Tiles of 128 px, 32 px overlap on a 128 px picture: ComfyUI averages 3 tilings (64×256, 256×64, 128×128 px),
    so the first two cut the picture in overlapping strips.

    With random VAE weights GroupNorm statistics differ per tile, so tiled ≠ whole everywhere by a small
    amount; a seam would show as an extra jump between neighbouring pixels across a tile border. The jump
    tiling adds at borders must be no larger than what it adds inside tiles (ratio ≤ 1.5 + 0.02 absolute),
    and the tiled picture must stay close to the whole one (mean abs diff < 0.06, max < 0.35 on a 0..1 scale).
    """
    import nodes
    from zimage_turbo.planner.decode import decode
    vae, latent, whole = vae_and_latent
    import comfy.sd
    calls = []
    real = comfy.sd.VAE.decode_tiled

    def spy(self, samples, **kwargs):
        calls.append(kwargs)
        return real(self, samples, **kwargs)
    monkeypatch.setattr(comfy.sd.VAE, "decode_tiled", spy)
    with torch.inference_mode():
        tiled, tiles = decode(vae, latent, tile_size=128)
        monkeypatch.setattr(comfy.sd.VAE, "decode_tiled", lambda self, samples, **kw: calls.append(kw) or tiled)
        nodes.VAEDecodeTiled().decode(vae, {"samples": latent}, tile_size=128, overlap=32)
    assert tiles == (16, 4)  # latent units: 128 px tiles, overlap a quarter
    # our tiled decode is ComfyUI's VAE.decode_tiled called as core VAEDecodeTiled calls it for 128 px / 32 px
    assert {k: calls[0][k] for k in ("tile_x", "tile_y", "overlap")} == \
        {k: calls[1][k] for k in ("tile_x", "tile_y", "overlap")} == {"tile_x": 16, "tile_y": 16, "overlap": 4}
    diff = (whole - tiled).abs()
    assert diff.mean() < 0.06 and diff.max() < 0.35, (diff.mean(), diff.max())
    # seams: jump between horizontal neighbours, tiled minus whole, at borders vs inside
    jump = lambda img: (img[:, :, 1:] - img[:, :, :-1]).abs().amax(dim=(0, 1, 3))  # noqa: E731
    added = (jump(tiled) - jump(whole)).abs()
    stride_px = (8 - 4) * 8  # the 64 px wide strips start every (tile - overlap) = 4 latent pixels
    borders = [c for c in range(added.shape[0]) if any(abs(c - k) <= 4 for k in range(stride_px, 128, stride_px))]
    inside = [c for c in range(added.shape[0]) if c not in borders]
    assert added[borders].max() <= 1.5 * added[inside].max() + 0.02, (added[borders].max(), added[inside].max())
