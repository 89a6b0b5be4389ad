"""The torch engine: keras-yolo3's network as a native PyTorch graph from the same TYOY weights files.

BatchNorm is folded into the convolutions; fp16 or bf16 on a GPU, NHWC (channels_last) memory, and one CUDA
graph per batch-size bucket (a batch is padded up to its bucket), so a batch costs one graph launch instead of
~250 kernel launches from Python; on CUDA the network is compiled first (torch.compile), which fuses each
convolution's bias, LeakyReLU and residual add into one kernel. The graphs share one memory pool and one
input buffer: a replica holds the activations of its largest bucket once, not once per bucket. On a GPU, JPEG
frames can be decoded (nvJPEG) and letterboxed there too (``load``), which takes the CPU's heaviest per-frame
work off it; frames decoded on the host are copied to the GPU ahead of their batch's turn (``stage``), so the copy
overlaps the batch before. Pinning is the CUDA device index; the memory share is torch's per-process cap, reserved
up front when growth is off. Runs on the CPU too (fp32), and never imports TensorFlow.
"""

from __future__ import annotations

import bisect
import contextlib
import importlib.util
import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import cv2
import numpy as np
from pydantic import Field

from common.codec import ImageError, decode_image, encode_image
from common.plugins import ENGINES
from common.settings import EngineSettings
from detector.engines.base import DeviceBatch, EngineError, Image
from detector.yolo.postprocess import OutputLayout, letterbox_geometry

if TYPE_CHECKING:
    from detector.model import ModelSpec

log = logging.getLogger(__name__)


class TorchEngineConfig(EngineSettings):
    """A native PyTorch graph built from the same weights files (BatchNorm folded); no TensorFlow needed."""

    kind: Literal["torch"] = "torch"
    needs: ClassVar[tuple[str, ...]] = ("torch", "h5py")
    gpu: int | Literal["auto"] | None = Field(
        "auto", description="CUDA device index; None: CPU; auto: the first CUDA device if there is one."
    )
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto", description="auto: fp16 on a GPU, fp32 on the CPU."
    )
    channels_last: bool = Field(True, description="NHWC memory layout (faster convolutions on tensor cores).")
    cuda_graphs: bool = Field(True, description="Capture one CUDA graph per batch-size bucket (GPU only).")
    compile: bool | Literal["auto"] = Field(
        "auto",
        description="Compile the network with torch.compile (Inductor): each convolution's bias, LeakyReLU and "
        "residual add run as one fused kernel instead of three (YOLOv3-416 fp16 on an H100: 4,955 img/s against "
        "3,073). Start-up takes longer (about 25 s the first time, then Inductor's on-disk cache). true needs "
        "Triton on a GPU and a C++ compiler on the CPU; auto: on when the engine runs on CUDA and Triton is "
        "installed.",
    )
    batch_buckets: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        default_factory=lambda: [1, 2, 4, 8, 16, 32, 64],
        min_length=1,
        description="Batch sizes with a graph of their own; a batch is padded up to the next bucket.",
    )
    memory_fraction: float = Field(
        1.0, gt=0, le=1, description="Share of the GPU's memory this process may use (torch's per-process cap)."
    )
    allow_growth: bool = Field(True, description="false: reserve the whole share at start.")
    decode: Literal["auto", "cpu", "gpu"] = Field(
        "auto",
        description="Where JPEG frames are decoded and letterboxed. gpu: nvJPEG (torchvision) and an antialiased "
        "bicubic letterbox on the GPU, so the CPU only unpacks messages; cpu: OpenCV or PIL, as model.resize says "
        "(TYOY's exact pixels); auto: gpu when the engine runs on CUDA and torchvision is installed.",
    )


def buckets_for(buckets: Sequence[int], max_batch: int | None) -> list[int]:
    """The buckets a batch of at most ``max_batch`` can use: a larger bucket's graph would only hold memory."""
    ordered = sorted(set(buckets))
    if max_batch is None:
        return ordered
    fits = [b for b in ordered if b >= max_batch]
    return [b for b in ordered if b < max_batch] + fits[:1]


class TorchEngine:
    name = "torch"
    output_layout: OutputLayout = "yolov3"

    def __init__(self, cfg: TorchEngineConfig, spec: ModelSpec, max_batch: int | None = None) -> None:
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
        model = build_torch_body(spec.architecture, len(spec.classes), spec.weights, spec.seed, spec.width)
        self._model = model.to(self._device, self._dtype).to(memory_format=self._format)  # type: ignore[call-overload]
        has_triton = importlib.util.find_spec("triton") is not None
        compiled = cfg.compile is True or (cfg.compile == "auto" and cuda and has_triton)
        self._net = torch.compile(self._model) if compiled else self._model
        self._size = spec.input_size
        self._divisor = torch.tensor(255.0, dtype=torch.float32, device=self._device)
        self._buckets = buckets_for(cfg.batch_buckets, max_batch)
        self._graphs: dict[int, tuple[Any, Any, tuple[Any, ...]]] = {}
        self._staging: Any = None
        self._use_graphs = cuda and cfg.cuda_graphs
        self.loads_images = self._decodes_on_device(cfg.decode, cuda)
        self.stages_batches = cuda and not self.loads_images
        # Frames are loaded (or host batches staged) on the feeder thread while a batch runs: on a stream of their
        # own, so the two overlap.
        self._load_stream = torch.cuda.Stream(self._device) if cuda else None  # type: ignore[no-untyped-call]
        self._pinned: Any = None  # the feeder's page-locked buffer for staging (the inference thread has its own)
        if self._use_graphs:
            # Capture every bucket now: a first capture mid-stream (with cuDNN's autotuning) stalls that batch for
            # seconds, and every frame queued behind it goes stale.
            with torch.cuda.device(self._device), torch.inference_mode():
                self._capture_all()
        if self.loads_images:
            # nvJPEG sets up its handles and buffers on first use, per batch size: here, not on live frames.
            grey = encode_image(np.full((self._size, self._size, 3), 128, np.uint8), "jpeg")
            for bucket in self._buckets:
                self.load([grey] * bucket)
        log.info(
            "torch engine ready: %s %d px on %s, %s%s, JPEG decode on the %s", spec.architecture, spec.input_size,
            self.device, precision, ", compiled" if compiled else "", "GPU" if self.loads_images else "CPU",
        )  # fmt: skip

    @staticmethod
    def _decodes_on_device(decode: str, cuda: bool) -> bool:
        has_vision = importlib.util.find_spec("torchvision") is not None
        if decode == "gpu":
            if not cuda:
                raise EngineError("engine.decode is gpu but the engine runs on the CPU: set engine.gpu, or decode: cpu")
            if not has_vision:
                raise EngineError(
                    "engine.decode: gpu needs torchvision (its nvJPEG decoder): install the torchvision release that "
                    "matches your torch, or set decode: cpu"
                )
        return decode == "gpu" or (decode == "auto" and cuda and has_vision)

    def _reserve(self, cfg: TorchEngineConfig) -> None:
        torch = self._torch
        if cfg.memory_fraction < 1.0:
            torch.cuda.set_per_process_memory_fraction(cfg.memory_fraction, self._device)
        if not cfg.allow_growth:
            # Allocate the share once and free it: the caching allocator keeps it reserved for this process.
            total = torch.cuda.get_device_properties(self._device).total_memory
            block = torch.empty(int(total * cfg.memory_fraction * 0.9), dtype=torch.uint8, device=self._device)
            del block

    def memory_bytes(self) -> int | None:
        """GPU memory held by torch's caching allocator for this engine's device (None on the CPU)."""
        import torch

        return int(torch.cuda.memory_reserved(self._device)) if self._device.type == "cuda" else None

    def predict(self, batch: np.ndarray | DeviceBatch) -> list[np.ndarray]:
        torch = self._torch
        with torch.inference_mode(), self._on_device():
            if isinstance(batch, DeviceBatch):
                outs = self.forward(batch.tensor)
            elif self._device.type == "cuda":
                outs = self._run_cuda(torch.from_numpy(batch))
            else:
                outs = self.forward(torch.from_numpy(batch).permute(0, 3, 1, 2))
            # NCHW heads back to NHWC, the layout the box decoder (and Keras) use; fp16 stays fp16 (half the bytes
            # to copy; the decoder casts what it reads), bf16 becomes float32 (numpy has no bfloat16). Reading them
            # back waits for the GPU, so the graphs' shared buffers are free again when this returns.
            heads = (o[: len(batch)].permute(0, 2, 3, 1) for o in outs)
            return [(h if h.dtype == torch.float16 else h.float()).cpu().numpy() for h in heads]

    def load(self, images: Sequence[Image]) -> DeviceBatch:
        """Decode (JPEG bytes: nvJPEG, batched) and letterbox ``images`` on this engine's device.

        A JPEG that nvJPEG refuses is decoded by OpenCV instead; one neither can decode is reported in ``failed``.
        RGB arrays are uploaded as they are. The letterbox is TYOY's geometry with an antialiased bicubic resize
        (close to PIL's, not bit-equal to it), done per group of same-sized frames.
        """
        torch = self._torch
        failed: dict[int, str] = {}
        with torch.inference_mode(), self._on_device(self._load_stream):
            pictures = self._decode_jpegs({i: im for i, im in enumerate(images) if isinstance(im, bytes)}, failed)
            for i, im in enumerate(images):
                if not isinstance(im, bytes):
                    pictures[i] = self._upload(im)
            kept = sorted(pictures)
            canvas = self._letterbox([pictures[i] for i in kept])
            if self._load_stream is not None:
                self._load_stream.synchronize()  # the batch is complete before the inference stream reads it
        return DeviceBatch(canvas, kept, failed)

    def stage(self, batch: np.ndarray) -> DeviceBatch:
        """A host-letterboxed (B, S, S, 3) uint8 batch on this engine's device, copied through a page-locked buffer
        on the load stream (the inference stream is busy with the batch before it); returns once it is there."""
        torch = self._torch
        n = len(batch)
        with torch.inference_mode(), self._on_device(self._load_stream):
            if self._pinned is None or len(self._pinned) < n:
                self._pinned = torch.empty((max(n, self._buckets[-1]), *batch.shape[1:]), dtype=torch.uint8,
                                           pin_memory=True)  # fmt: skip
            self._pinned[:n].copy_(torch.from_numpy(batch))
            tensor = self._pinned[:n].to(self._device, non_blocking=True).permute(0, 3, 1, 2)
            if self._load_stream is not None:
                self._load_stream.synchronize()  # copied: the buffer is free again, the tensor complete
        return DeviceBatch(tensor, list(range(n)), {})

    @contextlib.contextmanager
    def _on_device(self, stream: Any = None) -> Iterator[None]:
        if self._device.type != "cuda":
            yield
            return
        torch = self._torch
        side = torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()
        with torch.cuda.device(self._device), side:
            yield

    def _upload(self, image: np.ndarray) -> Any:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"load needs HxWx3 uint8 RGB arrays, got shape {image.shape} dtype {image.dtype}")
        return self._torch.from_numpy(np.require(image, requirements=["C", "W"])).to(self._device).permute(2, 0, 1)

    def _decode_jpegs(self, jpegs: dict[int, bytes], failed: dict[int, str]) -> dict[int, Any]:
        if not jpegs:
            return {}
        if not self.loads_images:
            raise EngineError("this torch engine decodes JPEGs on the CPU (engine.decode); pass RGB arrays")
        from torchvision.io import ImageReadMode, decode_jpeg

        torch = self._torch
        data = {i: torch.frombuffer(bytearray(b), dtype=torch.uint8) for i, b in jpegs.items()}
        try:
            pictures = decode_jpeg(list(data.values()), mode=ImageReadMode.RGB, device=self._device)
            return dict(zip(data, pictures, strict=True))
        except RuntimeError:
            pass  # one bad image fails the whole batched call: go one by one to find it
        out = {}
        for i, tensor in data.items():
            try:
                out[i] = decode_jpeg(tensor, mode=ImageReadMode.RGB, device=self._device)
            except RuntimeError as exc:
                try:  # the CPU's decoder, with the codec's policy for damaged data
                    bgr = decode_image(jpegs[i], "jpeg")
                except ImageError as err:
                    failed[i] = f"{err} (nvJPEG: {exc})"
                else:
                    out[i] = self._upload(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        return out

    def _letterbox(self, pictures: list[Any]) -> Any:
        """(3, H, W) uint8 pictures into one (N, 3, S, S) uint8 batch: scaled to fit, centred on grey 128."""
        torch = self._torch
        size = self._size
        canvas = torch.full((len(pictures), 3, size, size), 128, dtype=torch.uint8, device=self._device)
        groups: dict[tuple[int, int], list[int]] = {}
        for row, picture in enumerate(pictures):
            groups.setdefault((picture.shape[1], picture.shape[2]), []).append(row)
        for (h, w), rows in groups.items():
            nw, nh, dx, dy = letterbox_geometry(w, h, size)
            x = torch.stack([pictures[r] for r in rows])
            if (nw, nh) != (w, h):
                x = (
                    torch.nn.functional.interpolate(
                        x.float(), size=(nh, nw), mode="bicubic", align_corners=False, antialias=True
                    )
                    .round_()
                    .clamp_(0, 255)
                    .to(torch.uint8)
                )
            canvas[torch.tensor(rows, device=self._device), :, dy : dy + nh, dx : dx + nw] = x
        return canvas

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
        """Heads (NCHW, padded to the bucket) for an NCHW batch already on this engine's device. On a GPU the
        heads live in the graphs' shared pool: read them before the next call."""
        n = len(x)
        i = bisect.bisect_left(self._buckets, n)
        with self._torch.inference_mode():  # the graphs' buffers are inference tensors
            if not self._use_graphs or i == len(self._buckets):
                return self._run(self._normalise(x))
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

    def _run(self, x: Any) -> tuple[Any, ...]:
        if self._net is self._model:
            return tuple(self._model(x))
        # Compiled: the batch dimension is symbolic, so one compile serves every batch size. A batch of one would
        # be specialised (and compiled) on its own: it runs as two rows instead.
        single = len(x) == 1
        if single:
            x = self._torch.cat([x, x])
        self._torch._dynamo.maybe_mark_dynamic(x, 0)
        outs = self._net(x)
        return tuple(o[:1] for o in outs) if single else tuple(outs)

    def _capture_all(self) -> None:
        torch = self._torch
        biggest = self._buckets[-1]
        static_in = torch.zeros((biggest, 3, self._size, self._size), dtype=self._dtype, device=self._device)
        static_in = static_in.contiguous(memory_format=self._format)  # a bucket's input is its first rows
        stream = torch.cuda.Stream(self._device)
        stream.wait_stream(torch.cuda.current_stream(self._device))
        with torch.cuda.stream(stream):
            for bucket in self._buckets:
                for _ in range(3):  # warm-up (and cuDNN's choice for this shape) on a side stream, as capture needs
                    self._run(static_in[:bucket])
        torch.cuda.current_stream(self._device).wait_stream(stream)
        # Largest first, all in one pool: graphs run one at a time and their heads are read before the next
        # replay, so a smaller graph may reuse what the largest freed, and the pool is about one bucket's size.
        pool = None
        for bucket in reversed(self._buckets):
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                static_out = self._run(static_in[:bucket])
            pool = graph.pool()
            self._graphs[bucket] = (graph, static_in[:bucket], static_out)
        log.info("captured CUDA graphs for batches %s", self._buckets)


ENGINES.register(TorchEngineConfig, TorchEngine)
