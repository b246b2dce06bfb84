"""How a run's training and evaluation steps execute: compiled or eager (trainer.compile),
channels-last memory for conv nets (trainer.channels_last), mixed precision
(trainer.precision). Emergence is always measured on the eager module in fp32: the same weights
give the same E whatever runs the steps.

Compilation and memory layout change only the last digits of a result (as threads and devices
do), so they are not part of a run's identity; a precision other than fp32 is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
from collections.abc import Iterator

import torch
from torch import nn

from emergence_lab.config.groups import PRECISIONS

log = logging.getLogger(__name__)

# trainer.compile=auto compiles a conv net that trains at least this many steps: on 2 CPU
# cores resnet20's warm-up (about 100 s) is repaid after about 1,000 steps at 1.8x (make bench)
COMPILE_MIN_STEPS = 2000


def has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())


def can_compile(device: torch.device) -> bool:
    """Inductor needs a C++ compiler for CPU kernels (and Triton, shipped with CUDA torch, on GPUs)."""
    return device.type == "cuda" or (device.type == "cpu" and shutil.which("g++") is not None)


def wants_compile(setting: str, model: nn.Module, device: torch.device, steps: int) -> bool:
    """trainer.compile: true, false, or auto (a conv net long enough to repay the warm-up)."""
    if setting != "auto":
        return setting == "true"
    return has_conv(model) and steps >= COMPILE_MIN_STEPS and can_compile(device)


def wants_channels_last(setting: str, model: nn.Module) -> bool:
    """trainer.channels_last: true, false, or auto (conv nets)."""
    return has_conv(model) if setting == "auto" else setting == "true"


@dataclasses.dataclass
class Execution:
    """What the steps call (the compiled module or the model itself), under which autocast
    dtype, with which gradient scaler (fp16)."""

    forward: nn.Module
    dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None
    compiled: bool = False
    channels_last: bool = False

    @contextlib.contextmanager
    def autocast(self, device: torch.device) -> Iterator[None]:
        if self.dtype is None:
            yield
            return
        with torch.autocast(device.type, dtype=self.dtype):
            yield

    def step(self, loss: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        """Backward and optimizer step (scaled for fp16)."""
        opt.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            opt.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(opt)
        self.scaler.update()


def eager(model: nn.Module) -> Execution:
    """The model as it is: fp32, eager (tests, measurement-only callers)."""
    return Execution(model)


def prepare(model: nn.Module, compile_: str, channels_last: str, precision: str,
            device: torch.device, steps: int) -> Execution:
    """Set the model up for its steps: channels-last parameters (in place), the compiled
    module, the autocast dtype; `steps`: how many training steps the run takes."""
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"trainer.precision=fp16 needs a CUDA device, got {device}; use bf16 "
                         f"or fp32")
    last = wants_channels_last(channels_last, model)
    if last:
        model.to(memory_format=torch.channels_last)
    compiled = wants_compile(compile_, model, device, steps)
    forward = torch.compile(model, dynamic=False) if compiled else model
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    if compiled or last or precision != "fp32":
        log.info("steps run %s%s in %s", "compiled" if compiled else "eager",
                 ", channels-last" if last else "", precision)
    return Execution(forward, PRECISIONS[precision], scaler, compiled, last)
