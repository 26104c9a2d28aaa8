"""quant tests: make the shared helper module importable (tests have no __init__ files)."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
