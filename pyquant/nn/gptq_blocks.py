"""gptq_'s block-sequential calibration (GPTQ's sequential order, as AutoGPTQ runs a decoder): a
model's repeated blocks (transformer layers: the children of an nn.ModuleList or nn.Sequential)
are calibrated and converted one after another, each on the outputs of the blocks before it as
quantized, with only that block's Hessians in memory (a 7B Llama: one layer's, ~0.7 GB, instead
of ~22 GB for all).

Each calibration batch's forward runs once, in a thread of its own that pauses whenever it calls
a block not converted yet (the blocks' ``forward`` is replaced meanwhile): once every batch's
forward waits at the same block, that block runs on the recorded arguments (its own attention
mask, position embeddings: what the model gives it) under the calibration hooks, is converted,
runs converted on them, and each forward resumes with its output. Only one forward runs at a
time; the paused ones hold what a forward holds in flight (about one block's input per batch).
"""
from __future__ import annotations

import inspect
import threading
from collections.abc import Mapping
from typing import Callable

import torch
from torch import nn
from torch.utils._pytree import tree_map_only


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
    """One calibration batch's forward in a thread, handing control to and fro with the caller."""

    def __init__(self, stages: "BlockStages", batch):
        self.stages, self.batch = stages, batch
        self.go, self.paused = threading.Semaphore(0), threading.Semaphore(0)
        self.at = None      # (block, args, kwargs) while paused at a block; None once finished
        self.reply = None   # the block's output to resume with, or _Stop
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True, name="pyquant-gptq-forward")

    def _run(self):
        self.stages.local.forward = self
        try:  # (grad mode is per thread)
            with torch.inference_mode(False), torch.no_grad():
                self.stages.call(self.batch)
        except _Stop:
            pass
        except BaseException as e:  # noqa: B036 (handed to the caller's thread, raised there)
            self.error = e
        self.at = None
        self.paused.release()

    def pause(self, block, args, kwargs):
        """In the forward's thread: wait at ``block`` for its output."""
        self.at = (block, args, kwargs)
        self.paused.release()
        self.go.acquire()
        reply, self.reply, self.at = self.reply, None, None
        if reply is _Stop:
            raise _Stop()
        return reply

    def resume(self, reply=None):
        """In the caller's thread: start (or resume with ``reply``) and wait for the next pause."""
        if self.thread.ident is None:
            self.thread.start()
        else:
            self.reply = reply
            self.go.release()
        self.paused.acquire()
        if self.error is not None:
            error, self.error = self.error, None
            raise error


class BlockStages:
    """The calibration forwards over ``batches``, paused at each block not converted yet."""

    def __init__(self, model: nn.Module, blocks: list, batches: list, names: dict, call):
        self.model, self.blocks, self.names = model, blocks, names
        self.call = call  # call(batch): the model's forward on one batch
        self.local = threading.local()
        self.converted: set = set()
        self.forwards = [_Forward(self, b) for b in batches]
        self.saved = []

    def _block_forward(self, block, *args, **kwargs):
        forward = getattr(self.local, "forward", None)
        if forward is None:  # (gptq_'s own thread: the block itself)
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
        own = dict(self.saved)[block]
        return own if own is not None else type(block).forward.__get__(block)

    def __enter__(self):
        self.saved = [(b, b.__dict__.get("forward")) for b in self.blocks]
        for b in self.blocks:  # (an instance attribute: nn.Module.__call__ calls self.forward)
            b.forward = lambda *a, _b=b, **k: self._block_forward(_b, *a, **k)
        return self

    def __exit__(self, *exc):
        for f in self.forwards:  # (forwards still paused unwind, on an error)
            if f.at is not None:
                f.reply = _Stop
                f.go.release()
                f.thread.join()
        for b, own in self.saved:
            del b.forward
            if own is not None:
                b.forward = own
        return False

    def next_block(self):
        """(the block every paused forward waits at, its (args, kwargs) per forward), or None once
        every forward has finished."""
        for f in self.forwards:
            if f.thread.ident is None:
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
            block(*_copy(args), **_copy(kwargs))

    def finish(self, block) -> None:
        """The converted block's output for each forward, which resumes to its next block."""
        self.converted.add(block)
        for f in self.forwards:
            _, args, kwargs = f.at
            f.resume(block(*args, **kwargs))


class no_kv_cache:
    """``use_cache=False`` in every transformers config of the model while gptq_ calibrates (and
    passed to a root forward that takes it): a KV cache a block filled on its first run would be
    read by its second. Restored on exit."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.flipped = []

    def __enter__(self):
        for m in self.model.modules():
            cfg = getattr(m, "config", None)
            if getattr(cfg, "use_cache", None) is True and all(cfg is not c for c in self.flipped):
                cfg.use_cache = False
                self.flipped.append(cfg)
        try:
            takes = "use_cache" in inspect.signature(self.model.forward).parameters
        except (TypeError, ValueError):
            takes = False
        extra = {"use_cache": False} if takes else {}
        return lambda batch: _call(self.model, batch, extra)

    def __exit__(self, *exc):
        for cfg in self.flipped:
            cfg.use_cache = True
        return False


def _call(model: nn.Module, batch, extra: dict):
    """run_batch's call with the ``extra`` keyword arguments."""
    if isinstance(batch, Mapping):
        return model(**{**batch, **extra})
    if isinstance(batch, (tuple, list)) and not hasattr(batch, "_fields"):
        return model(*batch, **extra)
    return model(batch, **extra)
