"""Training metrics: a progress line, `metrics.jsonl` (always), wandb (when enabled), MFU on GPU.

Only rank 0 logs. `metrics.jsonl` is appended line by line and flushed, so a killed run keeps every
line it logged; a resume first cuts the file back to the checkpoint's step (`run_dir.cut_metrics`), so the
steps it trains again are logged once, never twice.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from srlm_fast.progress import format_duration

# Dense bf16 peak per device (TFLOP/s), matched against `torch.cuda.get_device_name()`.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "4090": 165.0}


def peak_tflops(device: torch.device, override: float = 0.0) -> float | None:
    """Peak dense bf16 TFLOP/s of one device, or None where MFU is not meaningful (CPU, unknown GPU)."""
    if override > 0:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in name:
            return value
    return None


class MetricsLogger:
    """Progress line + metrics.jsonl + optional wandb, for rank 0 (other ranks get a silent logger)."""

    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        enabled: bool,
        total_steps: int,
        config: dict[str, Any] | None = None,
        wandb: bool = False,
        wandb_project: str = "srlm-fast",
        wandb_run_name: str | None = None,
        wandb_mode: str = "online",
        stream=None,
    ) -> None:
        self.enabled = enabled
        self.total_steps = total_steps
        self.stream = stream or sys.stdout
        self._file = None
        self._wandb_run = None
        self._t0 = time.perf_counter()
        self._start_step: int | None = None
        if not enabled:
            return
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(run_dir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        if wandb and wandb_mode != "disabled":
            try:
                import wandb as wb  # lazy: not installed on the GPU image
            except ImportError:
                self.info("wandb requested but not installed; logging to metrics.jsonl only")
            else:
                self._wandb_run = wb.init(
                    project=wandb_project,
                    name=wandb_run_name,
                    config=config,
                    mode=wandb_mode,
                    dir=os.environ.get("WANDB_DIR", str(run_dir)),
                    resume="allow",
                )

    def info(self, message: str) -> None:
        if self.enabled:
            print(message, file=self.stream, flush=True)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """Record one optimizer step: a progress line, a JSON line, a wandb point."""
        if not self.enabled:
            return
        now = time.perf_counter()
        if self._start_step is None:
            self._start_step, self._t0 = step - 1, now - metrics.get("step_time", 0.0)
        done = step - self._start_step
        rate = done / max(now - self._t0, 1e-9)
        eta = (self.total_steps - step) / rate if rate > 0 else float("inf")
        record = {"step": step, **metrics, "elapsed_s": now - self._t0, "eta_s": eta}
        assert self._file is not None
        self._file.write(json.dumps(_jsonable(record)) + "\n")
        self._file.flush()
        if self._wandb_run is not None:
            self._wandb_run.log({k: v for k, v in record.items() if isinstance(v, int | float)}, step=step)
        parts = [f"step {step}/{self.total_steps}", f"loss {metrics['loss']:.4f}"]
        if "reward_accuracy" in metrics:
            parts.append(f"acc {metrics['reward_accuracy']:.3f} margin {metrics['margin']:.3f}")
        parts += [f"lr {metrics['lr']:.3g}", f"gnorm {metrics['grad_norm']:.3f}"]
        parts.append(f"{metrics['tokens_per_s']:,.0f} tok/s")
        if metrics.get("mfu") is not None:
            parts.append(f"mfu {100 * metrics['mfu']:.1f}%")
        parts.append(f"eta {format_duration(eta)}")
        self.info(" | ".join(parts))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._wandb_run is not None:
            self._wandb_run.finish()
            self._wandb_run = None


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    # JSON has no NaN/inf; keep the line parseable and the value visible.
    return {k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}
