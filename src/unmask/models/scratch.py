"""Reusable activation buffers for the largest temporaries of a layer.

A denoising step allocates the same large temporaries (the fused q/k/v and gate/up products, the
rotated queries and keys) at every layer of every step. Fresh host memory of that size is
often returned to the OS when freed and faulted in again on the next allocation, which on a
small model costs as much as a tenth of the forward. A request keeps one `Scratch` and its
layers write those temporaries into it instead; the numbers are the same.

One `Scratch` serves one forward at a time (a request's forwards run one after another), and
each named buffer holds a layer's temporary only until that layer is done with it.
"""

from __future__ import annotations

import torch
from torch import Tensor


class Scratch:
    """Named flat buffers that grow to the largest size asked for and are reused as views."""

    def __init__(self) -> None:
        self._buffers: dict[str, Tensor] = {}
        self._views: dict[tuple, Tensor] = {}  # (name, shape) -> its view of the buffer, made once

    def take(self, name: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """An uninitialised contiguous tensor of `shape` with `like`'s dtype and device; it
        shares memory with every earlier `take` of the same name."""
        key = (name, shape)
        view = self._views.get(key)
        if view is not None and view.dtype == like.dtype and view.device == like.device:
            return view
        numel = 1
        for size in shape:
            numel *= size
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < numel or buf.dtype != like.dtype or buf.device != like.device:
            buf = torch.empty(numel, dtype=like.dtype, device=like.device)
            self._buffers[name] = buf
            self._views = {k: v for k, v in self._views.items() if k[0] != name}  # views of the old buffer
        view = self._views[key] = buf[:numel].view(shape)
        return view
