"""What the node measures about itself: its devices, and load samples over time.

CPU and RAM come from psutil. GPU use and memory come from NVIDIA's management
library (package ``nvidia-ml-py``) when it is installed and a driver answers; without
it they are 0. Devices come from ``jax.devices()``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass

import psutil

__all__ = ["DeviceInfo", "GpuReading", "LoadSample", "MetricsHistory", "detect_devices", "gpu_readings", "sample_load"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceInfo:
    """One compute device: ``kind`` is "cpu" or "cuda" (or another JAX platform name)."""

    kind: str
    name: str
    memory_bytes: int


@dataclass(frozen=True)
class LoadSample:
    """Usage fractions (0..1) at ``timestamp`` (Unix seconds)."""

    timestamp: float
    cpu: float
    memory: float
    gpu: float = 0.0
    gpu_memory: float = 0.0
    ram_used_bytes: int = 0


@dataclass(frozen=True)
class GpuReading:
    """One GPU as NVML reads it now: utilisation (0..1) and memory in bytes."""

    index: int
    name: str
    utilization: float
    memory_used_bytes: int
    memory_total_bytes: int


def detect_devices() -> list[DeviceInfo]:
    """The devices JAX trains on; CPU memory is the machine's RAM, a GPU's is the card's
    (from NVML, else JAX's allocator limit)."""
    import jax

    devices = []
    for device in jax.devices():
        kind = "cuda" if device.platform == "gpu" else device.platform
        memory = 0
        if kind == "cpu":
            memory = psutil.virtual_memory().total
        else:
            memory = _nvml().total_memory(getattr(device, "local_hardware_id", None)) if kind == "cuda" else 0
            if not memory:  # JAX's allocator limit (a fraction of the card) when NVML is silent
                try:
                    memory = int((device.memory_stats() or {}).get("bytes_limit", 0))
                except Exception:  # some backends do not report memory
                    memory = 0
        devices.append(DeviceInfo(kind=kind, name=str(getattr(device, "device_kind", kind)), memory_bytes=memory))
    return devices


def default_slots(devices: list[DeviceInfo]) -> int:
    """One slot per device JAX trains on (accelerators; on a CPU-only node its CPU
    devices, one unless XLA is told to make more)."""
    return max(1, len(devices))


def cpu_cores() -> int:
    return os.cpu_count() or 1


class _Nvml:
    """NVIDIA's management library if it answers, else nothing (loaded once)."""

    def __init__(self) -> None:
        self.lib = None
        self.handles: list = []
        try:
            import pynvml

            pynvml.nvmlInit()
            self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            self.lib = pynvml
        except Exception:  # not installed, no driver, no GPU: GPU figures stay 0
            self.lib = None

    def total_memory(self, index: int | None) -> int:
        """The card's memory in bytes as the driver reports it; 0 when unknown."""
        if self.lib is None or index is None or not 0 <= index < len(self.handles):
            return 0
        try:
            return int(self.lib.nvmlDeviceGetMemoryInfo(self.handles[index]).total)
        except Exception:
            return 0

    def usage(self) -> tuple[float, float]:
        """Mean GPU utilisation and memory use over the node's GPUs, as fractions."""
        if self.lib is None or not self.handles:
            return 0.0, 0.0
        try:
            util = [self.lib.nvmlDeviceGetUtilizationRates(h).gpu / 100.0 for h in self.handles]
            mem = [self.lib.nvmlDeviceGetMemoryInfo(h) for h in self.handles]
        except Exception:
            return 0.0, 0.0
        return sum(util) / len(util), sum(m.used / m.total for m in mem if m.total) / len(mem)

    def readings(self) -> list[GpuReading]:
        """Each GPU's figures now; empty when NVML does not answer (never made-up zeros)."""
        if self.lib is None:
            return []
        out = []
        for index, handle in enumerate(self.handles):
            try:
                name = self.lib.nvmlDeviceGetName(handle)
                util = self.lib.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0
                mem = self.lib.nvmlDeviceGetMemoryInfo(handle)
            except Exception:  # a GPU that stopped answering is left out, not reported as idle
                continue
            out.append(GpuReading(index=index, name=name.decode() if isinstance(name, bytes) else str(name),
                                  utilization=util, memory_used_bytes=int(mem.used), memory_total_bytes=int(mem.total)))
        return out


_NVML: _Nvml | None = None
_NVML_LOCK = threading.Lock()


def _nvml() -> _Nvml:
    global _NVML
    with _NVML_LOCK:
        if _NVML is None:
            _NVML = _Nvml()
        return _NVML


def gpu_readings() -> list[GpuReading]:
    """Every GPU NVML answers for (package ``nvidia-ml-py``); empty without it or a driver."""
    return _nvml().readings()


def sample_load() -> LoadSample:
    """CPU use since the previous call, RAM use and GPU use now."""
    vm = psutil.virtual_memory()
    gpu, gpu_memory = _nvml().usage()
    return LoadSample(
        timestamp=time.time(), cpu=psutil.cpu_percent(interval=None) / 100.0, memory=vm.percent / 100.0,
        gpu=gpu, gpu_memory=gpu_memory, ram_used_bytes=int(vm.total - vm.available),
    )


class MetricsHistory:
    """The node's recent load samples, oldest first, bounded (thread-safe)."""

    def __init__(self, max_points: int = 8640) -> None:
        self._points: deque[LoadSample] = deque(maxlen=max_points)
        self._lock = threading.Lock()

    def record(self, sample: LoadSample | None = None) -> LoadSample:
        sample = sample or sample_load()
        with self._lock:
            self._points.append(sample)
        return sample

    def between(self, start: float = 0, end: float = 0) -> list[LoadSample]:
        """Samples with start <= timestamp <= end (whole Unix seconds); 0 leaves that side open."""
        with self._lock:
            points = list(self._points)
        return [p for p in points if (not start or int(p.timestamp) >= start) and (not end or int(p.timestamp) <= end)]

    def latest(self) -> LoadSample | None:
        with self._lock:
            return self._points[-1] if self._points else None
