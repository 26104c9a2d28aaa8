"""The prefetcher's schedule (quant/prefetch.py), on the CPU with a recording copier in place of CUDA streams.

What is checked is the logic a GPU run depends on and cannot show by itself: after the first pass each
offloaded layer gets the copy started by the layer before it, exactly one copy is in flight, and a copy is
never handed to another layer or used after the layer's weight was replaced (a stale copy would silently give
wrong weights).
"""
from __future__ import annotations

import gc

import torch

from zimage_turbo.quant.prefetch import Prefetcher
from zimage_turbo.quant.tensor import QuantizedTensor


class RecordingCopier:
    """Copies are clones tagged with how they were made; start_copy/finish_copy are logged."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []

    def copy_now(self, weight):
        self.log.append(("now", weight.tensor_name))
        return weight.clone()

    def start_copy(self, layer):
        self.log.append(("start", layer.weight.tensor_name))
        return layer.weight.clone()

    def finish_copy(self, handle):
        self.log.append(("finish", handle.tensor_name))
        return handle


class Layer(torch.nn.Module):
    def __init__(self, name: str, seed: int) -> None:
        super().__init__()
        raw = torch.randint(0, 256, (4, 34), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
        self.weight = torch.nn.Parameter(QuantizedTensor(raw, "Q8_0", (4, 32), name), requires_grad=False)


def _run(prefetcher: Prefetcher, layers) -> list[torch.Tensor]:
    return [prefetcher.fetch(layer) for layer in layers]


def test_second_pass_uses_the_copies_started_one_layer_ahead():
    copier = RecordingCopier()
    layers = [Layer(f"l{i}", i) for i in range(4)]
    p = Prefetcher(torch.device("cpu"), copier)
    first = _run(p, layers)
    assert copier.log == [("now", "l0"), ("now", "l1"), ("now", "l2"), ("now", "l3")]  # order not known yet
    copier.log.clear()
    second = _run(p, layers)
    assert copier.log == [("now", "l0"), ("start", "l1"), ("finish", "l1"), ("start", "l2"), ("finish", "l2"),
                          ("start", "l3"), ("finish", "l3")]
    for a, b, layer in zip(first, second, layers):
        assert torch.equal(a.raw_bytes(), layer.weight.raw_bytes()) and torch.equal(b.raw_bytes(), a.raw_bytes())
        assert isinstance(b, QuantizedTensor) and b.quant_type.name == "Q8_0"
    assert p.in_flight is None  # the last layer starts nothing: no blocks left on the device after a pass


def test_one_copy_in_flight_and_an_interrupted_pass_does_not_leak_it():
    copier = RecordingCopier()
    layers = [Layer(f"l{i}", i) for i in range(3)]
    p = Prefetcher(torch.device("cpu"), copier)
    _run(p, layers)
    p.fetch(layers[0])  # an interrupted pass: l1's copy started, never used
    assert p.in_flight is not None and p.in_flight.layer() is layers[1]
    copier.log.clear()
    p.fetch(layers[0])  # the next pass starts over: the stale copy is dropped, not kept beside a new one
    assert copier.log == [("now", "l0"), ("start", "l1")]


def test_a_replaced_weight_never_gets_the_old_copy():
    copier = RecordingCopier()
    layers = [Layer(f"l{i}", i) for i in range(2)]
    p = Prefetcher(torch.device("cpu"), copier)
    _run(p, layers)
    p.fetch(layers[0])  # l1's copy in flight
    replacement = Layer("l1_new", 99).weight
    layers[1].weight = replacement  # e.g. the model was reloaded with other weights
    copier.log.clear()
    got = p.fetch(layers[1])
    assert copier.log == [("now", "l1_new")]
    assert torch.equal(got.raw_bytes(), replacement.raw_bytes())


def test_a_new_layer_with_a_dead_layers_id_is_not_mistaken_for_it():
    copier = RecordingCopier()
    p = Prefetcher(torch.device("cpu"), copier)
    a, b = Layer("a", 1), Layer("b", 2)
    _run(p, [a, b])
    p.fetch(a)  # b's copy in flight
    b_index = p.position.pop(id(b))
    del b
    gc.collect()
    c = Layer("c", 3)
    p.position[id(c)] = b_index  # CPython reuses a freed object's address: c looks like b by id
    copier.log.clear()
    got = p.fetch(c)
    assert copier.log == [("now", "c")]  # neither b's in-flight copy nor b's place in the order
    assert torch.equal(got.raw_bytes(), c.weight.raw_bytes())
    assert p.order[p.position[id(c)]]() is c


def test_the_layers_of_an_unloaded_model_leave_the_order():
    copier = RecordingCopier()
    p = Prefetcher(torch.device("cpu"), copier)
    old = [Layer(f"old{i}", i) for i in range(3)]
    _run(p, old)
    _run(p, old)
    del old
    gc.collect()
    new = [Layer(f"new{i}", 10 + i) for i in range(2)]
    _run(p, new)
    assert [ref() for ref in p.order] == new and p.position == {id(x): i for i, x in enumerate(new)}
    copier.log.clear()
    _run(p, new)  # the new model's schedule is the usual one
    assert copier.log == [("now", "new0"), ("start", "new1"), ("finish", "new1")]
