"""The launch-config tuner of the Triton kernels (quant/kernels/tuning.py), with a fake timer on the CPU.

On a GPU the timer is Triton's do_bench; what is checked here is the choice around it: the fastest candidate
wins, is timed once per key and reused, small inputs and CPU tensors are never timed, a failing candidate is
skipped, and with nothing usable (or tuning off) the default is kept.
"""
from __future__ import annotations

import pytest

from zimage_turbo.quant.kernels import tuning
from zimage_turbo.quant.kernels.tuning import MIN_BLOCKS, LaunchConfig, Tuner

DEFAULT = LaunchConfig(64, 4)
CANDIDATES = (LaunchConfig(32, 2), LaunchConfig(64, 4), LaunchConfig(128, 8))


class FakeTimer:
    """Times a call as the duration its config is given (and counts the calls it timed)."""

    def __init__(self, durations: dict[LaunchConfig, float], failing: tuple[LaunchConfig, ...] = ()) -> None:
        self.durations, self.failing, self.timed = durations, failing, []
        self.current: LaunchConfig | None = None

    def run(self, config: LaunchConfig) -> None:
        if config in self.failing:
            raise RuntimeError("out of resources")
        self.current = config

    def __call__(self, fn) -> float:
        fn()
        self.timed.append(self.current)
        return self.durations[self.current]


def test_fastest_candidate_is_chosen_once_per_key_and_reused():
    timer = FakeTimer({CANDIDATES[0]: 0.30, CANDIDATES[1]: 0.25, CANDIDATES[2]: 0.12})
    tuner = Tuner(DEFAULT, CANDIDATES, timer)
    assert tuner.config("bf16", MIN_BLOCKS, True, timer.run) == CANDIDATES[2]
    assert timer.timed == list(CANDIDATES)
    assert tuner.config("bf16", 10, True, timer.run) == CANDIDATES[2]  # reused, even for a small input
    assert timer.timed == list(CANDIDATES)  # not timed again
    timer.durations[CANDIDATES[0]] = 0.01
    assert tuner.config("f32", MIN_BLOCKS * 4, True, timer.run) == CANDIDATES[0]  # another key, its own choice
    assert tuner.timings["bf16"][CANDIDATES[1]] == 0.25


@pytest.mark.parametrize("n_blocks, on_gpu", [(MIN_BLOCKS - 1, True), (MIN_BLOCKS * 8, False)])
def test_small_or_cpu_inputs_use_the_default_untimed(n_blocks, on_gpu):
    timer = FakeTimer({c: 1.0 for c in CANDIDATES})
    tuner = Tuner(DEFAULT, CANDIDATES, timer)
    assert tuner.config("bf16", n_blocks, on_gpu, timer.run) == DEFAULT
    assert timer.timed == [] and tuner.chosen == {}


def test_failing_candidates_are_skipped_and_all_failing_keeps_the_default():
    timer = FakeTimer({CANDIDATES[1]: 0.5, CANDIDATES[2]: 0.4}, failing=(CANDIDATES[2],))
    assert Tuner(DEFAULT, CANDIDATES, timer).config("k", MIN_BLOCKS, True, timer.run) == CANDIDATES[1]
    timer = FakeTimer({}, failing=CANDIDATES)
    assert Tuner(LaunchConfig(8, 4), CANDIDATES, timer).config("k", MIN_BLOCKS, True, timer.run) == LaunchConfig(8, 4)


def test_tuning_off_keeps_the_default(monkeypatch):
    monkeypatch.setattr(tuning, "TUNE", False)
    timer = FakeTimer({c: 1.0 for c in CANDIDATES})
    assert Tuner(DEFAULT, CANDIDATES, timer).config("bf16", MIN_BLOCKS, True, timer.run) == DEFAULT
    assert timer.timed == []
