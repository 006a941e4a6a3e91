"""Time and peak memory of a call, on a CUDA device or on the CPU, reported with what was measured.

    meter = Meter(torch.device("cuda"))
    res = timed(lambda: model(**inputs), meter, reps=3)   # median_s, times_s, peak_mb, peak_reserved_mb, before_mb

CUDA: every timed call is bracketed by ``torch.cuda.synchronize()``; memory is
``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``, i.e. live tensors
(the weights included), not the CUDA context or the caching allocator's reserve.
CPU: wall time, and the process's peak resident set (VmHWM) after resetting it through
``/proc/self/clear_refs`` (Linux; where that is not writable, the lifetime ``ru_maxrss`` is
reported and `Meter.peak_kind` says so). RSS includes the weights and whatever the allocator
keeps from earlier calls, so CPU peaks bound live memory from above.
"""
from __future__ import annotations

import resource
import statistics
import time
from typing import Any, Callable

import torch

MB = 2 ** 20


class Meter:
    """Synchronise, reset and read the peak memory of one device (CUDA or CPU)."""

    def __init__(self, device: str | torch.device):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        if not self.cuda and self.device.type != "cpu":
            raise ValueError(f"Meter measures cuda or cpu devices, got {self.device}")
        self.can_reset = self.cuda or self._reset_rss()

    @property
    def time_kind(self) -> str:
        return "wall time between torch.cuda.synchronize() calls" if self.cuda else "wall time (time.perf_counter)"

    @property
    def peak_kind(self) -> str:
        if self.cuda:
            return "torch.cuda.max_memory_allocated (live tensors incl. weights; excludes context and cache)"
        if self.can_reset:
            return "CPU peak RSS (VmHWM, reset before each measurement; incl. weights and allocator heap)"
        return "CPU peak RSS since process start (ru_maxrss; VmHWM could not be reset)"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def reset(self) -> None:
        self.sync()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.can_reset:
            self._reset_rss()

    def peak_mb(self) -> float:
        self.sync()
        if self.cuda:
            return torch.cuda.max_memory_allocated(self.device) / MB
        if self.can_reset:
            return _proc_status_kb("VmHWM") / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def peak_reserved_mb(self) -> float | None:
        """CUDA: the caching allocator's peak reserve (what an OOM is about); None on the CPU."""
        return torch.cuda.max_memory_reserved(self.device) / MB if self.cuda else None

    def current_mb(self) -> float:
        self.sync()
        if self.cuda:
            return torch.cuda.memory_allocated(self.device) / MB
        return _proc_status_kb("VmRSS") / 1024

    @staticmethod
    def _reset_rss() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")                       # 5: reset the peak RSS (VmHWM) to the current RSS
            return True
        except OSError:
            return False


def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def timed(fn: Callable[[], Any], meter: Meter, reps: int, warmup: int = 1) -> dict[str, Any]:
    """Run `fn` `warmup` times untimed, then `reps` times timed; median time and the timed calls' peak memory."""
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    for _ in range(warmup):
        fn()
    before = meter.current_mb()
    meter.reset()
    times = []
    for _ in range(reps):
        meter.sync()
        t = time.perf_counter()
        fn()
        meter.sync()
        times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "times_s": times, "peak_mb": meter.peak_mb(),
            "peak_reserved_mb": meter.peak_reserved_mb(), "before_mb": before}
