"""Where local models run and in what precision: `--device auto|cpu|cuda|cuda:N|mps`, `--dtype auto|fp32|bf16|fp16`.

    auto device: CUDA (every visible GPU), then MPS, then CPU
    auto dtype:  bf16 on an accelerator that supports it (fp16 on older CUDA GPUs and MPS without bf16), fp32 on CPU

The hardware is read once into a `Hardware` snapshot; everything that decides (placement, the memory plan,
sharding) takes one as an argument, so tests can hand in a fake machine with GPUs it does not have.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field

from auditor.errors import UsageError

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"
DTYPE_CHOICES = ("auto", "fp32", "bf16", "fp16")
DEVICE_ENV, DTYPE_ENV = "TRAIT_AUDIT_DEVICE", "TRAIT_AUDIT_DTYPE"  # defaults for --device/--dtype (the test suite pins cpu)


@dataclass(frozen=True)
class GPU:
    index: int
    name: str
    total_bytes: int
    free_bytes: int
    bf16: bool = True


@dataclass(frozen=True)
class Hardware:
    """What the machine offers right now: CUDA GPUs (with free memory), MPS, and free RAM."""

    gpus: tuple[GPU, ...] = ()
    mps: bool = False
    mps_bf16: bool = False
    ram_free_bytes: int = 0
    ram_total_bytes: int = 0

    def free_bytes(self, device: str) -> int:
        """Free memory where `device` keeps its tensors (RAM for cpu and mps, which shares it)."""
        if device.startswith("cuda"):
            return self.gpu(device).free_bytes
        return self.ram_free_bytes

    def gpu(self, device: str) -> GPU:
        index = int(device.partition(":")[2] or 0)
        for gpu in self.gpus:
            if gpu.index == index:
                return gpu
        raise UsageError(f"--device {device}: no such CUDA device ({len(self.gpus)} visible)")


def detect_hardware() -> Hardware:
    """The live machine. CUDA figures come from cudaMemGetInfo, RAM from psutil (available, not merely free)."""
    import psutil
    import torch

    gpus = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(index)
            gpus.append(GPU(index, torch.cuda.get_device_name(index), int(total), int(free), bool(torch.cuda.is_bf16_supported())))
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    memory = psutil.virtual_memory()
    return Hardware(tuple(gpus), mps, mps and _mps_bf16(torch), int(memory.available), int(memory.total))


def _mps_bf16(torch) -> bool:
    try:  # bf16 on MPS depends on the macOS version: ask the device
        torch.ones(1, dtype=torch.bfloat16, device="mps")
        return True
    except (RuntimeError, TypeError):
        return False


@dataclass(frozen=True)
class Placement:
    """Where and in what precision local models load, as the user asked (`auto` allowed)."""

    device: str = field(default_factory=lambda: os.environ.get(DEVICE_ENV) or "auto")
    dtype: str = field(default_factory=lambda: os.environ.get(DTYPE_ENV) or "auto")

    def __post_init__(self):
        check_device(self.device)
        if self.dtype not in DTYPE_CHOICES:
            raise UsageError(f"--dtype {self.dtype}: expected one of {', '.join(DTYPE_CHOICES)}")

    @classmethod
    def of(cls, device: str | None, dtype: str | None) -> Placement:
        """From options that may be unset: an unset one keeps its default (the environment, else auto)."""
        return cls(**{k: v for k, v in (("device", device), ("dtype", dtype)) if v})

    def resolve(self, hardware: Hardware | None = None) -> Resolved:
        hardware = hardware or detect_hardware()
        devices = resolve_devices(self.device, hardware)
        return Resolved(devices, resolve_dtype(self.dtype, devices[0], hardware))

    def describe(self) -> dict:
        return {"device": self.device, "dtype": self.dtype}


@dataclass(frozen=True)
class Resolved:
    """A concrete placement: the devices a model may use (several only for `cuda` with several GPUs) and its dtype."""

    devices: tuple[str, ...]
    dtype: str

    @property
    def device(self) -> str:
        return self.devices[0]

    @property
    def accelerator(self) -> bool:
        return self.device != "cpu"


def check_device(spec: str) -> None:
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", spec or ""):
        raise UsageError(f"--device {spec}: expected {DEVICE_CHOICES}")


def resolve_devices(spec: str, hardware: Hardware) -> tuple[str, ...]:
    """`cuda` means every visible GPU (a model goes on one, or is spread over them when it needs to be)."""
    check_device(spec)
    if spec == "auto":
        if hardware.gpus:
            return tuple(f"cuda:{g.index}" for g in hardware.gpus)
        return ("mps",) if hardware.mps else ("cpu",)
    if spec.startswith("cuda"):
        if not hardware.gpus:
            raise UsageError(f"--device {spec}: no CUDA device is visible here (torch.cuda.is_available() is False); "
                             "use --device cpu, or auto to take what there is")
        if spec == "cuda":
            return tuple(f"cuda:{g.index}" for g in hardware.gpus)
        return (f"cuda:{hardware.gpu(spec).index}",)
    if spec == "mps" and not hardware.mps:
        raise UsageError("--device mps: MPS is not available here; use --device cpu or auto")
    return (spec,)


def resolve_dtype(spec: str, device: str, hardware: Hardware) -> str:
    if spec != "auto":
        return spec
    if device.startswith("cuda"):
        return "bf16" if hardware.gpu(device).bf16 else "fp16"
    if device == "mps":
        return "bf16" if hardware.mps_bf16 else "fp16"
    return "fp32"


def torch_dtype(name: str):
    import torch

    return getattr(torch, DTYPES[name])


def gib(n: int | float) -> str:
    return f"{n / 2**30:.1f} GiB"


def thread_budget(default: int | None = None) -> int:
    """CPU threads to compute on: TRAIT_AUDIT_THREADS when set, else `default`, else the cores this process may use."""
    if os.environ.get("TRAIT_AUDIT_THREADS"):
        return max(1, int(os.environ["TRAIT_AUDIT_THREADS"]))
    if default is not None:
        return max(1, default)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextmanager
def torch_threads(count: int):
    """Torch's intra-op threads set to `count` for a block (the setting is process-wide), restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, count))
    try:
        yield
    finally:
        torch.set_num_threads(before)
