"""The torch engine: keras-yolo3's network as a native PyTorch graph from the same TYOY weights files.

BatchNorm is folded into the convolutions; fp16 or bf16 on a GPU, NHWC (channels_last) memory, and one CUDA
graph per batch-size bucket (a batch is padded up to its bucket), so a batch costs one graph launch instead of
~250 kernel launches from Python. Pinning is the CUDA device index; the memory share is torch's per-process cap,
reserved up front when growth is off. Runs on the CPU too (fp32), and never imports TensorFlow.
"""

from __future__ import annotations

import bisect
import logging
from typing import Any

import numpy as np

from common.config import TorchEngineConfig
from detector.engines import EngineError
from detector.model import ModelSpec

log = logging.getLogger(__name__)


class TorchEngine:
    name = "torch"

    def __init__(self, cfg: TorchEngineConfig, spec: ModelSpec) -> None:
        import torch

        from detector.yolo.torch_model import build_torch_body

        self._torch = torch
        self.cfg = cfg
        cuda = cfg.gpu is not None and (cfg.gpu != "auto" or torch.cuda.is_available())
        if cuda:
            index = 0 if cfg.gpu == "auto" else int(cfg.gpu)  # type: ignore[arg-type]
            count = torch.cuda.device_count()
            if index >= count:
                raise EngineError(f"engine.gpu is {index} but torch sees {count} CUDA devices")
            self._device = torch.device("cuda", index)
            torch.backends.cudnn.benchmark = True  # fixed shapes per bucket: let cuDNN pick the fastest kernels
            self._reserve(cfg)
        else:
            self._device = torch.device("cpu")
        self.device = "cpu" if not cuda else f"cuda:{self._device.index}"
        precision = cfg.precision if cfg.precision != "auto" else ("fp16" if cuda else "fp32")
        self.precision = precision
        self._dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        self._format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        model = build_torch_body(spec.architecture, len(spec.classes), spec.weights, spec.seed)
        self._model = model.to(self._device, self._dtype).to(memory_format=self._format)  # type: ignore[call-overload]
        self._size = spec.input_size
        self._divisor = torch.tensor(255.0, dtype=torch.float32, device=self._device)
        self._buckets = sorted(set(cfg.batch_buckets))
        self._graphs: dict[int, tuple[Any, Any, tuple[Any, ...]]] = {}
        self._staging: Any = None
        self._use_graphs = cuda and cfg.cuda_graphs
        if self._use_graphs:
            # Capture every bucket now: a first capture mid-stream (with cuDNN's autotuning) stalls that batch for
            # seconds, and every frame queued behind it goes stale.
            with torch.cuda.device(self._device), torch.inference_mode():
                for bucket in self._buckets:
                    self._graphs[bucket] = self._capture(bucket)
        log.info("torch engine ready: %s %d px on %s, %s", spec.architecture, spec.input_size, self.device, precision)

    def _reserve(self, cfg: TorchEngineConfig) -> None:
        torch = self._torch
        if cfg.memory_fraction < 1.0:
            torch.cuda.set_per_process_memory_fraction(cfg.memory_fraction, self._device)
        if not cfg.allow_growth:
            # Allocate the share once and free it: the caching allocator keeps it reserved for this process.
            total = torch.cuda.get_device_properties(self._device).total_memory
            block = torch.empty(int(total * cfg.memory_fraction * 0.9), dtype=torch.uint8, device=self._device)
            del block

    def predict(self, batch: np.ndarray) -> list[np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(batch)
            if self._device.type == "cuda":
                with torch.cuda.device(self._device):
                    outs = self._run_cuda(x)
            else:
                outs = self._model(self._normalise(x.permute(0, 3, 1, 2)))
            # NCHW heads back to NHWC float32, the layout the box decoder (and Keras) use.
            return [o[: len(batch)].permute(0, 2, 3, 1).float().cpu().numpy() for o in outs]

    def _run_cuda(self, x: Any) -> tuple[Any, ...]:
        # Through one page-locked buffer, grown when needed (pinning afresh each call costs more than the copy).
        # The copy out of it has finished when predict returns: reading the heads back waits for the stream.
        n = len(x)
        if self._staging is None or len(self._staging) < n or self._staging.dtype != x.dtype:
            rows = max(n, self._buckets[-1])
            self._staging = self._torch.empty((rows, *x.shape[1:]), dtype=x.dtype, pin_memory=True)
        self._staging[:n].copy_(x)
        return self.forward(self._staging[:n].to(self._device, non_blocking=True).permute(0, 3, 1, 2))

    def forward(self, x: Any) -> tuple[Any, ...]:
        """Heads (NCHW, padded to the bucket) for an NCHW batch already on this engine's GPU."""
        n = len(x)
        i = bisect.bisect_left(self._buckets, n)
        if not self._use_graphs or i == len(self._buckets):
            return tuple(self._model(self._normalise(x)))
        graph, static_in, static_out = self._graphs[self._buckets[i]]
        static_in[:n].copy_(self._normalise(x))  # rows past n keep the last batch's data, unused
        graph.replay()
        return tuple(static_out)

    def _normalise(self, x: Any) -> Any:
        """uint8 0-255 to the engine's dtype in [0, 1], divided in float32 as TYOY did; float32 is taken as is."""
        if x.dtype == self._torch.uint8:
            # A tensor divisor on the device: with a Python scalar, torch's CUDA kernel multiplies by 1/255,
            # 1 ulp off numpy's v / 255 for about half the bytes.
            x = x.to(self._torch.float32) / self._divisor
        return x.to(self._dtype, memory_format=self._format)

    def _capture(self, bucket: int) -> tuple[Any, Any, tuple[Any, ...]]:
        torch = self._torch
        static_in = torch.zeros((bucket, 3, self._size, self._size), dtype=self._dtype, device=self._device)
        static_in = static_in.contiguous(memory_format=self._format)
        stream = torch.cuda.Stream(self._device)
        stream.wait_stream(torch.cuda.current_stream(self._device))
        with torch.cuda.stream(stream):
            for _ in range(3):  # warm-up on a side stream, as graph capture requires
                self._model(static_in)
        torch.cuda.current_stream(self._device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = tuple(self._model(static_in))
        log.info("captured a CUDA graph for batch %d", bucket)
        return graph, static_in, static_out
