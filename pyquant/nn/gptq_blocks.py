"""gptq_'s block-sequential calibration (GPTQ's sequential order, as AutoGPTQ runs a decoder): a
model's repeated blocks (transformer layers: the children of an nn.ModuleList or nn.Sequential)
are calibrated and converted one after another, each on the outputs of the blocks before it as
quantized, with only that block's Hessians in memory (a 7B Llama: one layer's, ~0.7 GB, instead
of ~22 GB for all).

Each calibration batch's forward runs once, in a greenlet of its own (a coroutine with its own
stack on the caller's thread: the caller's grad mode, autocast and OpenMP threads) that pauses
whenever it calls a block not converted yet (the blocks' ``forward`` is replaced meanwhile): once
every batch's forward waits at the same block, that block runs on copies of the recorded
arguments (its own attention mask, position embeddings: what the model gives it) under the
calibration hooks, is converted, runs converted on them, and each forward resumes with its
output. Only one forward runs at a time; the paused ones hold what a forward holds in flight
(about one block's input per batch). A torch.compile'd model is calibrated through its eager
module.
"""
from __future__ import annotations

import inspect
import threading
from typing import Callable

import greenlet
import torch
from torch import nn
from torch.utils._pytree import tree_map_only

from .api import run_batch


def repeated_blocks(model: nn.Module, is_layer: Callable[[nn.Module], bool]) -> list[nn.Module]:
    """The children of each outermost nn.ModuleList / nn.Sequential with at least two distinct
    children that each hold a layer to convert and are not one themselves, nor a container that
    is never called (a ModuleList / ModuleDict: its children are looked at instead): a decoder's
    layers, an encoder's, a ResNet stage's blocks; in the model's module order."""
    found, inside = [], set()
    for m in model.modules():  # (outer containers come before what they hold)
        if id(m) in inside or not isinstance(m, (nn.ModuleList, nn.Sequential)):
            continue
        kids = list(m)
        if (len(kids) >= 2 and len({id(k) for k in kids}) == len(kids)
                and all(not is_layer(k) and not isinstance(k, (nn.ModuleList, nn.ModuleDict))
                        and any(is_layer(s) for s in k.modules()) for k in kids)):
            found += kids
            inside.update(id(s) for k in kids for s in k.modules())
    return found


def _copy(inputs):
    """The arguments for one more run of a block (a block may change its inputs in place)."""
    return tree_map_only(torch.Tensor, torch.Tensor.clone, inputs)


def _is_kv_cache(value) -> bool:
    return hasattr(value, "get_seq_length") and hasattr(value, "update")


class _Stop(BaseException):  # (not Exception: model code that catches Exception lets it through)
    """Unwinds a paused forward that will not resume (gptq_ stopped on an error)."""


class _Forward:
    """One calibration batch's forward in a greenlet (a coroutine with its own stack, on the
    caller's thread: the caller's grad mode, autocast, torch function modes and OpenMP threads),
    handing control to and fro with the caller."""

    def __init__(self, stages: "BlockStages", batch):
        self.stages, self.batch = stages, batch
        self.caller = greenlet.getcurrent()
        self.g = greenlet.greenlet(self._run, parent=self.caller)
        self.at = None      # (block, args, kwargs) while paused at a block
        self.error = None

    def _run(self):
        try:
            self.stages.call(self.batch)
        except _Stop:
            pass
        except BaseException as e:  # noqa: B036 (handed to the caller, raised there)
            self.error = e

    def pause(self, block, args, kwargs):
        """In the forward: wait at ``block`` for its output."""
        self.at = (block, args, kwargs)
        try:
            reply = self.caller.switch()
        finally:
            self.at = None
        if reply is _Stop:
            raise _Stop()
        return reply

    def resume(self, reply=None):
        """In the caller: start (or resume with ``reply``) and wait for the next pause."""
        self.g.switch(reply) if self.g else self.g.switch()
        if self.error is not None:
            error, self.error = self.error, None
            raise error


class BlockStages:
    """The calibration forwards over ``batches``, paused at each block not converted yet."""

    def __init__(self, blocks: list, batches: list, names: dict, call):
        self.blocks, self.names = blocks, names
        self.call = call  # call(batch): the model's forward on one batch
        self.converted: set = set()
        self.forwards = [_Forward(self, b) for b in batches]
        self.of_greenlet = {f.g: f for f in self.forwards}
        self.thread = threading.get_ident()
        self.saved: dict = {}  # block -> its own instance forward (None: its class's)
        self.stopping = False

    def _block_forward(self, block, *args, **kwargs):
        if self.stopping:
            raise _Stop()
        forward = self.of_greenlet.get(greenlet.getcurrent())
        if forward is None:
            if threading.get_ident() != self.thread:
                raise ValueError(f"gptq_: block {self.names[block]!r} ran in a thread the model "
                                 "started; calibrate such a model with sequential=False")
            return self._own_forward(block)(*args, **kwargs)
        if block in self.converted:
            raise ValueError(f"gptq_: block {self.names[block]!r} ran again after it was converted "
                             "(a block called twice in one forward); the model is partly converted: "
                             "start again from the float model with sequential=False")
        if any(_is_kv_cache(v) for v in list(args) + list(kwargs.values())):
            raise ValueError(f"gptq_: block {self.names[block]!r} was given a KV cache; calibrate "
                             "with use_cache=False (a block runs twice on its arguments)")
        return forward.pause(block, args, kwargs)

    def _own_forward(self, block):
        """The block's forward without its __call__ (its hooks already ran in the paused call)."""
        own = self.saved[block]
        return own if own is not None else type(block).forward.__get__(block)

    def __enter__(self):
        self.saved = {b: b.__dict__.get("forward") for b in self.blocks}
        for b in self.blocks:  # (an instance attribute: nn.Module.__call__ calls self.forward)
            b.forward = lambda *a, _b=b, **k: self._block_forward(_b, *a, **k)
        return self

    def __exit__(self, *exc):
        self.stopping = True  # (a block called from here on unwinds its forward)
        try:
            for f in self.forwards:  # (forwards still paused unwind, on an error)
                if f.g and f.at is not None:
                    f.g.throw(_Stop)
        finally:
            for b, own in self.saved.items():
                del b.forward
                if own is not None:
                    b.forward = own
        return False

    def next_block(self):
        """(the block every paused forward waits at, its (args, kwargs) per forward), or None once
        every forward has finished."""
        for f in self.forwards:
            if not f.g and not f.g.dead:  # (not started yet)
                f.resume()
        waiting = [f for f in self.forwards if f.at is not None]
        if not waiting:
            return None
        if len(waiting) < len(self.forwards) or len({id(f.at[0]) for f in waiting}) > 1:
            raise ValueError("gptq_: the calibration batches reach the model's blocks in different "
                             "orders (or some skip a block); the model is partly converted: start "
                             "again from the float model with sequential=False")
        return waiting[0].at[0], [(f.at[1], f.at[2]) for f in waiting]

    def run_block(self, block, inputs) -> None:
        """The block on a copy of each forward's arguments (under calibration hooks)."""
        for args, kwargs in inputs:
            self._own_forward(block)(*_copy(args), **_copy(kwargs))

    def finish(self, block) -> None:
        """The converted block's output for each forward, which resumes to its next block."""
        self.converted.add(block)
        for f in self.forwards:
            _, args, kwargs = f.at
            f.resume(self._own_forward(block)(*args, **kwargs))


class no_kv_cache:
    """``use_cache=False`` in every transformers config of the model while gptq_ calibrates (and
    passed to a root forward that takes it): a KV cache a block filled on its first run would be
    read by its second. Restored on exit. Yields call(batch), the model's forward on a batch (a
    torch.compile'd model's eager module: its graph would trace the paused forwards)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.flipped = []

    def __enter__(self):
        for m in self.model.modules():
            cfg = getattr(m, "config", None)
            if getattr(cfg, "use_cache", None) is True and all(cfg is not c for c in self.flipped):
                cfg.use_cache = False
                self.flipped.append(cfg)
        eager = getattr(self.model, "_orig_mod", self.model)  # (torch.compile'd: its eager module)
        try:
            takes = "use_cache" in inspect.signature(eager.forward).parameters
        except (TypeError, ValueError):
            takes = False
        extra = {"use_cache": False} if takes else {}
        return lambda batch: run_batch(eager, batch, **extra)

    def __exit__(self, *exc):
        for cfg in self.flipped:
            cfg.use_cache = True
        return False

