"""VRAM planner: what fits on a card, from file headers and activation formulas (no weights loaded)."""
