"""onnxruntime sessions with explicit providers, read back and checked.

Rules (learnt from onnxruntime's behaviour, each kept for a failure it prevents): pass providers explicitly, never the
whole available list (it may start with Azure); read `get_providers()` back; refuse to start if
CUDA was demanded and not obtained; size CPU threads from the CPUs this process may run on.
Create sessions after any fork: call these from the worker process, never at import time.
"""

from __future__ import annotations

import logging
import os
from typing import Literal

import onnxruntime as ort

from detector.limits import DEVICES

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]


class ProviderError(RuntimeError):
    """The execution provider that was demanded could not be obtained."""


def cpu_threads() -> int:
    """CPUs available to this process (cgroup/affinity aware), not the host's core count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def cuda_available() -> bool:
    return "CUDAExecutionProvider" in ort.get_available_providers()


def providers_for(device: str) -> list:
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if not cuda_available():
            raise ProviderError(
                "device cuda was demanded (VERITY_DEVICE=cuda) but this onnxruntime has no CUDAExecutionProvider "
                f"(available: {ort.get_available_providers()}); install onnxruntime-gpu and "
                "make sure the CPU-only onnxruntime wheel is not installed beside it"
            )
        return [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    if cuda_available():
        return [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def make_session(model: bytes | str | os.PathLike, device: str = "auto",
                 threads: int | None = None, spin: bool = False) -> tuple[ort.InferenceSession, str]:
    """Create a session and return it with the provider that will really run it.

    `spin` (VERITY_ORT_SPIN, default off): whether idle onnxruntime threads spin-wait for work.
    Off, they sleep. Measured on 2 cores (bench/detector.py, bench/service.py, 2026-11-25):
    spinning off took a 1080p photo from 32 to 26 ms, the pipeline from 65% to 72% of the raw ORT
    ceiling, and the whole service from 18 to 31 items/s, because spinning threads took CPU from
    the Python thread that feeds them and from the web process beside them. Turn it on only on
    a host with cores to spare for each worker."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or cpu_threads()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    wanted = providers_for(device)
    if wanted[0] != "CPUExecutionProvider":
        _preload_cuda_libraries()
    src = model if isinstance(model, bytes) else os.fspath(model)
    session = ort.InferenceSession(src, sess_options=opts, providers=wanted)
    got = session.get_providers()
    provider = got[0] if got else "none"
    if device == "cuda" and provider != "CUDAExecutionProvider":
        raise ProviderError(f"CUDA was demanded but the session runs on {got}")
    if device == "auto" and wanted[0] != "CPUExecutionProvider" and provider == "CPUExecutionProvider":
        log.warning("CUDA provider was available but the session fell back to the CPU: %s", got)
    return session, provider


_preloaded = False


def _preload_cuda_libraries() -> None:
    """Load the CUDA/cuDNN libraries that onnxruntime-gpu[cuda,cudnn] installs as wheels.

    Without this the CUDA provider looks only at the system library path and, not finding
    cuDNN there, the session silently falls back to the CPU.
    """
    global _preloaded
    if _preloaded:
        return
    _preloaded = True
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    try:
        preload()
    except Exception as e:  # noqa: BLE001 - missing nvidia-* wheels: the system libraries may still do
        log.info("onnxruntime.preload_dlls() failed (%s); relying on the system CUDA libraries", e)
