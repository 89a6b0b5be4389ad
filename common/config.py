"""One pydantic model for the whole stack, loaded from one YAML file.

Errors name the field and its YAML line. Deployment overrides come from the environment: ``REDIS_URL``, and
``STREAMYOLO__SECTION__FIELD=value`` for any field (the value is parsed as YAML, so lists and numbers work); an
item of a list of named items by its name, e.g. ``STREAMYOLO__DETECTOR__POOLS__MAIN__ENGINE__GPU=1``.
Relative paths in the file are resolved against the file's folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from common.keys import STREAM_NAME_PATTERN
from common.redact import redact, redact_text

ENV_PREFIX = "STREAMYOLO__"


class ConfigError(ValueError):
    """A config that cannot be used; ``problems`` holds one line per error, each naming field and line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    value = value.expanduser()
    if base is not None and not value.is_absolute():
        return Path(base) / value
    return value


ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]
Name = Annotated[str, Field(pattern=STREAM_NAME_PATTERN, description="Letters, digits, '_', '.', '-'.")]
StreamPatterns = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=128)]],
    Field(min_length=1, description="Stream names or glob patterns (fnmatch: *, ?, [abc])."),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _unique_names(what: str) -> AfterValidator:
    """A list validator refusing two items with one name."""

    def check(items: list[Any]) -> list[Any]:
        names = [item.name for item in items]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate {what} names: {', '.join(dupes)}")
        return items

    return AfterValidator(check)


class ConsumerConfig(_Strict):
    """What every consumer-group reader has: its streams, blocking, redelivery and claiming."""

    name: Name = Field(description="Pool or sink name; names its consumer group.")
    streams: StreamPatterns = ["*"]
    block_ms: int = Field(1000, ge=1, le=600_000, description="Longest blocking read.")
    max_deliveries: int = Field(3, ge=1, le=1000, description="Deliveries before an entry is dead-lettered.")
    claim_idle_ms: int = Field(
        30_000, ge=100, le=86_400_000, description="Claim entries a crashed consumer left pending this long."
    )
    rescan_s: float = Field(5.0, gt=0, le=3600, description="How often stream patterns are re-resolved.")


# ---------------------------------------------------------------------------------------------------- redis
class EmbeddedServerConfig(_Strict):
    socket_dir: ConfigPath | None = Field(
        None, description="Folder for the embedded server's unix socket; default: a per-user runtime folder."
    )
    maxmemory_mb: int = Field(1024, ge=16, le=1_048_576, description="maxmemory of the embedded server.")
    data_dir: ConfigPath | None = Field(
        None,
        description="Keep an append-only file here (fsync before every reply) so streams and pending lists survive "
        "restarts and crashes; None: keep nothing.",
    )


class RedisConfig(_Strict):
    url: str | None = Field(
        None,
        description="redis://, rediss:// or unix:// URL (password in the URL). None: start an embedded server.",
    )
    socket_timeout_s: float = Field(
        10.0,
        ge=1,
        le=3600,
        description="Socket timeout: the longest any call waits on a silent network; must exceed every blocking "
        "read (block_ms).",
    )
    connect_timeout_s: float = Field(5.0, gt=0, le=300, description="Timeout of one connection attempt.")
    retries: int = Field(6, ge=0, le=100, description="Retries with exponential backoff on connection errors.")
    embedded: EmbeddedServerConfig = Field(default_factory=EmbeddedServerConfig)
    tls_ca_file: ConfigPath | None = Field(
        None, description="rediss:// only: CA bundle (PEM) the server's certificate must chain to; None: the system's."
    )
    tls_cert_file: ConfigPath | None = Field(
        None, description="rediss:// only: client certificate (PEM) for mutual TLS; needs tls_key_file."
    )
    tls_key_file: ConfigPath | None = Field(
        None, description="rediss:// only: private key (PEM, unencrypted) of tls_cert_file."
    )
    tls_check_hostname: bool = Field(
        True, description="rediss:// only: the server's certificate must name the URL's host."
    )

    @field_validator("url")
    @classmethod
    def _scheme(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return url

    @property
    def tls_settings(self) -> list[str]:
        """The TLS fields set to something other than their default."""
        return [name for name in ("tls_ca_file", "tls_cert_file", "tls_key_file") if getattr(self, name)] + (
            [] if self.tls_check_hostname else ["tls_check_hostname"]
        )

    @model_validator(mode="after")
    def _tls_needs_rediss(self) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("mutual TLS needs both tls_cert_file and tls_key_file (or neither)")
        if self.tls_settings and not (self.url or "").startswith("rediss://"):
            # Silently ignoring them would send the password in clear text to a server meant to be TLS-only.
            got = "none is set (the embedded server has no TLS)" if self.url is None else "this one is not"
            raise ValueError(
                f"TLS settings ({', '.join(self.tls_settings)}) need a rediss:// url (redis.url or REDIS_URL); {got}"
            )
        return self


class StreamsConfig(_Strict):
    prefix: str = Field(
        "yolo",
        pattern=r"^[A-Za-z0-9_.\-{}]{1,64}$",
        description="Key prefix; one Redis can host many stacks.",
    )
    frames_maxlen: int = Field(2000, ge=10, le=10_000_000, description="Approximate cap of each frames stream.")
    results_maxlen: int = Field(10_000, ge=10, le=10_000_000, description="Approximate cap of each results stream.")
    dead_maxlen: int = Field(10_000, ge=10, le=10_000_000, description="Approximate cap of the dead-letter stream.")


# ---------------------------------------------------------------------------------------------------- ingest
class SyntheticSourceConfig(_Strict):
    kind: Literal["synthetic"] = "synthetic"
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Same seed, same frames.")
    width: int = Field(640, ge=32, le=8192, description="Frame width in pixels.")
    height: int = Field(480, ge=32, le=8192, description="Frame height in pixels.")
    fps: float = Field(10.0, gt=0, le=1000, description="Frame rate of the simulated camera.")
    shapes: int = Field(3, ge=0, le=32, description="Number of moving shapes.")
    distractors: int = Field(
        0, ge=0, le=32, description="Moving plus signs, labelled NULL in the truth (a class to ignore)."
    )
    realtime: bool = Field(True, description="Pace frames at fps; false produces them as fast as possible.")
    truth_path: ConfigPath | None = Field(
        None, description="Append the ground truth (labels and boxes) of every published frame here, as JSONL."
    )


class FileSourceConfig(_Strict):
    kind: Literal["file"] = "file"
    path: ConfigPath = Field(description="Video file readable by OpenCV/FFmpeg.")
    loop: bool = Field(False, description="Start over at the end of the file instead of finishing.")
    realtime: bool = Field(False, description="Pace frames at the file's own frame rate.")


class ImagesSourceConfig(_Strict):
    kind: Literal["images"] = "images"
    path: ConfigPath = Field(
        description="Folder of images, read in name order; or a text file listing images, one path a line (relative "
        "to the list's folder), read in that order."
    )
    pattern: str = Field(
        "*", min_length=1, description="Glob of the names to read in the folder, e.g. '*.jpg' ('**/*': subfolders too)."
    )
    fps: float = Field(10.0, gt=0, le=1000, description="Frame rate the folder stands for (sampling, pacing).")
    loop: bool = Field(False, description="Start over after the last image instead of finishing.")
    realtime: bool = Field(False, description="Pace images at fps.")


class _NetworkSource(_Strict):
    url: str = Field(min_length=8, description="Camera URL; credentials may be in it.")
    open_timeout_s: float = Field(10.0, gt=0, le=300, description="Give up opening after this long.")
    read_timeout_s: float = Field(10.0, gt=0, le=300, description="A stream silent this long is reconnected.")


class RtspSourceConfig(_NetworkSource):
    kind: Literal["rtsp"] = "rtsp"
    transport: Literal["tcp", "udp"] = Field("tcp", description="RTP over the RTSP TCP connection, or over UDP.")

    @field_validator("url")
    @classmethod
    def _scheme(cls, url: str) -> str:
        if not url.startswith(("rtsp://", "rtsps://")):
            raise ValueError("an rtsp source needs an rtsp:// or rtsps:// URL")
        return url


class HttpSourceConfig(_NetworkSource):
    kind: Literal["http"] = "http"

    @field_validator("url")
    @classmethod
    def _scheme(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("an http source (MJPEG, HLS) needs an http:// or https:// URL")
        return url


class WebcamSourceConfig(_Strict):
    kind: Literal["webcam"] = "webcam"
    index: int = Field(0, ge=0, le=255, description="Device index: /dev/video<index>.")
    width: int | None = Field(None, ge=32, le=8192, description="Capture width to ask the device for.")
    height: int | None = Field(None, ge=32, le=8192, description="Capture height to ask the device for.")
    fps: float | None = Field(None, gt=0, le=1000, description="Frame rate to ask the device for.")


SourceConfig = Annotated[
    SyntheticSourceConfig
    | FileSourceConfig
    | ImagesSourceConfig
    | RtspSourceConfig
    | HttpSourceConfig
    | WebcamSourceConfig,
    Field(discriminator="kind"),
]

RAW_MAX_SIDE = 640
"""Raw BGR frames are ~1 MB at 640x480; larger ones belong in JPEG."""


class CameraConfig(_Strict):
    name: Name = Field(description="Stream name; part of the Redis keys.")
    source: SourceConfig
    every_n: int = Field(1, ge=1, le=10_000, description="Publish every n-th frame read from the source.")
    fps: float | None = Field(
        None, gt=0, le=1000, description="Publish at this rate instead (time-based: no drift); excludes every_n."
    )
    max_side: int = Field(640, ge=32, le=8192, description="Resize so the longer side is at most this.")
    encoding: Literal["jpeg", "png", "bgr8"] = Field(
        "jpeg",
        description=f"jpeg; png (lossless, for recordings whose every pixel counts); or raw BGR (max_side <= "
        f"{RAW_MAX_SIDE}).",
    )
    jpeg_quality: int = Field(85, ge=10, le=100, description="JPEG quality.")
    maxlen: int | None = Field(
        None, ge=10, le=10_000_000, description="Cap of this camera's frames stream; default streams.frames_maxlen."
    )
    decoder_threads: int = Field(
        1,
        ge=0,
        le=64,
        description="FFmpeg decoder threads for this camera; 0: OpenCV's default (one per CPU: memory per camera "
        "then grows with the host's core count).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.fps is not None and self.every_n != 1:
            raise ValueError("set either every_n or fps, not both")
        if self.encoding == "bgr8" and self.max_side > RAW_MAX_SIDE:
            raise ValueError(f"bgr8 frames need max_side <= {RAW_MAX_SIDE} (got {self.max_side}): use jpeg")
        return self


class IngestConfig(_Strict):
    cameras: Annotated[list[CameraConfig], _unique_names("camera")] = Field(
        default_factory=list, max_length=4096, description="One per stream."
    )
    process_per_camera: bool = Field(
        False, description="The local launcher starts one ingest process per camera instead of one for all."
    )
    queue_size: int = Field(
        256, ge=1, le=100_000, description="Frames waiting for Redis; past it the oldest are dropped and counted."
    )
    pipeline: int = Field(32, ge=1, le=1024, description="Most frames sent to Redis in one round trip.")
    max_lag: int | None = Field(
        64,
        ge=1,
        le=1_000_000,
        description="A recording read unpaced (a file or image folder without realtime, a synthetic camera with "
        "realtime false) waits while the slowest detector pool has this many of its frames to read, and while no "
        "pool reads it, while its stream is at its cap: none of its frames is trimmed unread. None: never wait.",
    )
    retry_initial_s: float = Field(0.5, gt=0, le=60, description="First wait before reopening a failed source.")
    retry_max_s: float = Field(30.0, gt=0, le=3600, description="Longest wait between reopening attempts.")
    stats_interval_s: float = Field(30.0, gt=0, le=86_400, description="How often per-stream counters are logged.")


# ---------------------------------------------------------------------------------------------------- detector
class ModelConfig(_Strict):
    """A TrainYourOwnYOLO model: a folder as TYOY writes it, or the files one by one (which override the folder)."""

    folder: ConfigPath | None = Field(
        None,
        description="Folder holding trained_weights_final.h5 (or one .h5), *anchors*.txt and *classes*.txt.",
    )
    weights: ConfigPath | None = Field(
        None,
        description="TYOY weights (.h5: weights only, or a full saved model). None and no folder: random weights.",
    )
    anchors: ConfigPath | None = Field(
        None, description="Anchors file (9 pairs: YOLOv3, 6: tiny). None and no folder: keras-yolo3's defaults."
    )
    classes: ConfigPath | list[str] | None = Field(
        None,
        description="Classes file, or the class names in index order; required without a folder (with model.onnx, "
        "the names in the file's metadata by default).",
    )
    onnx: ConfigPath | None = Field(
        None,
        description="An ONNX export (YOLOv3 heads, or YOLOv5/v8/v11-style outputs); with the onnx engine. It holds "
        "the weights, so model.folder and model.weights do not go with it.",
    )
    architecture: Literal["auto", "yolov3", "tiny"] = Field(
        "auto", description="auto: from the anchor count (6: tiny), else yolov3."
    )
    input_size: int = Field(416, ge=32, le=2048, multiple_of=32, description="Network input side, pixels.")
    resize: Literal["pil", "opencv"] = Field(
        "pil",
        description="Letterbox resize: pil is TYOY's bicubic (same results as training and TYOY's detect_image); "
        "opencv is faster with slightly different pixels.",
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of the random weights when there is no weights file.")

    @model_validator(mode="after")
    def _classes_known(self) -> Self:
        if self.onnx is not None:
            # An export's classes may be in its metadata: whether they are is known once the file is read.
            if self.folder is not None or self.weights is not None:
                raise ValueError(
                    "model.onnx holds the weights: remove model.folder and model.weights (give model.classes and "
                    "model.anchors one by one)"
                )
        elif self.folder is None and self.classes is None:
            raise ValueError("give a model folder, or the classes (a file or a list of names)")
        return self


class TensorFlowEngineConfig(_Strict):
    """Keras 3 on TensorFlow; GPU settings are applied before TensorFlow touches a GPU."""

    kind: Literal["tensorflow"] = "tensorflow"
    gpu: int | Literal["auto"] | None = Field(
        "auto", description="GPU index to pin to; None: CPU only; auto: TensorFlow's choice (the first GPU)."
    )
    memory_fraction: float = Field(
        1.0, gt=0, le=1, description="Share of the GPU's memory this process may use (a TensorFlow memory limit)."
    )
    allow_growth: bool = Field(True, description="Take GPU memory as needed instead of the whole share at start.")
    hush: bool = Field(True, description="Silence TensorFlow's and absl's start-up logging.")


class TorchEngineConfig(_Strict):
    """A native PyTorch graph built from the same weights files (BatchNorm folded); no TensorFlow needed."""

    kind: Literal["torch"] = "torch"
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


class OnnxEngineConfig(_Strict):
    """An ONNX export (model.onnx) on onnxruntime: CPU, or CUDA / TensorRT with onnxruntime-gpu."""

    kind: Literal["onnx"] = "onnx"
    gpu: Annotated[int, Field(ge=0, le=255)] | Literal["auto"] | None = Field(
        "auto",
        description="CUDA device index; None: CPU; auto: the first GPU when onnxruntime has a GPU provider "
        "(onnxruntime-gpu), else the CPU.",
    )
    providers: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        None,
        min_length=1,
        max_length=8,
        description="onnxruntime execution providers in order of preference, e.g. [CUDAExecutionProvider, "
        "CPUExecutionProvider]; None: TensorRT, then CUDA (those installed, unless gpu is null), then the CPU.",
    )
    layout: Literal["auto", "yolov3", "v8", "v5"] = Field(
        "auto",
        description="The model's outputs. yolov3: 2 or 3 YOLOv3 heads (NCHW or NHWC); v8 (YOLOv8/v11): one "
        "[batch, 4 + classes, boxes] of cx, cy, w, h in input pixels and class scores; v5: one "
        "[batch, boxes, 5 + classes] of cx, cy, w, h, objectness and class scores; auto: from the output shapes.",
    )
    threads: int = Field(
        0, ge=0, le=256, description="Intra-op threads on the CPU; 0: onnxruntime's default (one per core)."
    )

    @model_validator(mode="after")
    def _gpu_providers_need_a_gpu(self) -> Self:
        gpu_providers = [p for p in self.providers or [] if p in ("CUDAExecutionProvider", "TensorrtExecutionProvider")]
        if self.gpu is None and gpu_providers:
            raise ValueError(f"engine.providers names {', '.join(gpu_providers)} but engine.gpu is null (the CPU)")
        return self


def _engine_kind(value: Any) -> str | None:
    # An engine without a kind is the default engine's settings (e.g. only a GPU set from the environment).
    return value.get("kind", "tensorflow") if isinstance(value, dict) else getattr(value, "kind", None)


EngineConfig = Annotated[
    Annotated[TensorFlowEngineConfig, Tag("tensorflow")]
    | Annotated[TorchEngineConfig, Tag("torch")]
    | Annotated[OnnxEngineConfig, Tag("onnx")],
    Discriminator(_engine_kind),
]


class PoolConfig(ConsumerConfig):
    """A detector pool: one consumer group on the frames streams; its replicas are the consumers."""

    model: ModelConfig
    engine: EngineConfig = Field(default_factory=TensorFlowEngineConfig)
    replicas: int = Field(1, ge=1, le=256, description="Processes the local launcher starts for this pool.")
    gpus: list[Annotated[int, Field(ge=0, le=255)]] = Field(
        default_factory=list,
        max_length=256,
        description="GPUs the local launcher spreads the replicas over: replica r runs with engine.gpu set to "
        "gpus[r % len(gpus)]; empty: every replica on engine.gpu.",
    )
    max_batch: int = Field(8, ge=1, le=1024, description="Most frames in one inference batch.")
    max_wait_ms: int = Field(
        20, ge=0, le=60_000, description="Longest wait for a batch to fill, from its first frame; then it runs."
    )
    max_age_ms: int | None = Field(
        5000,
        ge=1,
        le=86_400_000,
        description="Frames older than this are acked as stale, not inferred (never a recording's); None: keep.",
    )
    score_threshold: float = Field(0.3, ge=0, le=1, description="Keep detections scoring at least this.")
    min_score: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=dict, description="Per-label score threshold, in place of score_threshold."
    )
    iou_threshold: float = Field(0.45, gt=0, le=1, description="Per-class NMS IoU threshold.")
    max_per_class: int = Field(20, ge=1, le=10_000, description="Most boxes kept per class.")
    clip_boxes: bool = Field(
        True,
        description="Clip boxes to the frame. false: as the network decoded them, as TrainYourOwnYOLO's detect_image "
        "takes them before its own rounding (streamyolo detect, to write Detector.py's exact rows).",
    )
    ignore_labels: list[str] = Field(default_factory=list, description="Labels never published.")
    decode_threads: int = Field(2, ge=1, le=64, description="Threads decoding and letterboxing the next batch.")
    inference_timeout_s: float = Field(
        60.0, gt=0, le=3600, description="An inference running longer restarts the engine (the watchdog)."
    )

    @model_validator(mode="after")
    def _onnx_model_needs_onnx_engine(self) -> Self:
        if self.gpus and self.engine.gpu is None:
            raise ValueError(f"gpus {self.gpus} but engine.gpu is null (the CPU): remove one of them")
        if self.engine.kind == "onnx" and self.model.onnx is None:
            raise ValueError("engine.kind onnx needs model.onnx: the .onnx file to run")
        if self.model.onnx is not None and self.engine.kind != "onnx":
            raise ValueError(
                f"model.onnx needs engine.kind: onnx (the {self.engine.kind} engine builds the network from "
                "TrainYourOwnYOLO weights files)"
            )
        return self


class DetectorConfig(_Strict):
    pools: Annotated[list[PoolConfig], _unique_names("pool")] = Field(
        default_factory=list, max_length=64, description="Detector pools."
    )


# ---------------------------------------------------------------------------------------------------- sinks
class _StoreSinkConfig(ConsumerConfig):
    batch: int = Field(100, ge=1, le=10_000, description="Most results read (and stored in one batch) per stream.")


class JsonlSinkConfig(_StoreSinkConfig):
    """Results appended to a file, one JSON object a line."""

    kind: Literal["jsonl"] = "jsonl"
    path: ConfigPath = Field(description="File the results are appended to, one JSON object a line.")


class SqliteSinkConfig(_StoreSinkConfig):
    """Results and their detections in an SQLite database (WAL), created or migrated at start."""

    kind: Literal["sqlite"] = "sqlite"
    path: ConfigPath = Field(description="Database file; created with its folder if missing.")
    busy_timeout_s: float = Field(10.0, gt=0, le=600, description="Wait this long for another writer's lock.")


class PostgresSinkConfig(_StoreSinkConfig):
    """Results and their detections in PostgreSQL (psycopg 3), schema created or migrated at start."""

    kind: Literal["postgres"] = "postgres"
    url: str = Field(
        description="postgresql:// URL (libpq's other settings, such as PGPASSWORD, apply too).",
        pattern=r"^postgres(ql)?://",
    )
    connect_timeout_s: float = Field(10.0, gt=0, le=300, description="Timeout of one connection attempt.")


RelativePoint = tuple[Annotated[float, Field(ge=0, le=1)], Annotated[float, Field(ge=0, le=1)]]


class WebhookActionConfig(_Strict):
    """HTTP POST of the alert as JSON."""

    kind: Literal["webhook"] = "webhook"
    url: str = Field(pattern=r"^https?://", description="http:// or https:// URL the alert is POSTed to.")
    timeout_s: float = Field(5.0, gt=0, le=300, description="Timeout of one request.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers (e.g. Authorization).")


class MqttActionConfig(_Strict):
    """The alert published on ``{topic_prefix}/{stream}/{label}``, the retained state on ``.../state``."""

    kind: Literal["mqtt"] = "mqtt"
    host: str = Field("127.0.0.1", min_length=1, description="Broker host.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port.")
    topic_prefix: str = Field("streamyolo", min_length=1, pattern=r"^[^#+]+$", description="First topic levels.")
    qos: Literal[0, 1, 2] = Field(1, description="MQTT quality of service of every publish.")
    username: str | None = Field(None, description="Broker user; the password comes from MQTT_PASSWORD.")
    timeout_s: float = Field(5.0, gt=0, le=300, description="Timeout to connect and to have a publish confirmed.")


class LogActionConfig(_Strict):
    """A log line per alert."""

    kind: Literal["log"] = "log"
    level: Literal["INFO", "WARNING", "ERROR"] = Field("WARNING", description="Level of the line.")


class SnapshotActionConfig(_Strict):
    """The frame with its boxes drawn, saved as JPEG (fetched from the frames stream while it is still there)."""

    kind: Literal["snapshot"] = "snapshot"
    folder: ConfigPath = Field(description="Snapshots go to FOLDER/STREAM/; created if missing.")
    quality: int = Field(90, ge=10, le=100, description="JPEG quality.")


ActionConfig = Annotated[
    WebhookActionConfig | MqttActionConfig | LogActionConfig | SnapshotActionConfig, Field(discriminator="kind")
]


class AlertRuleConfig(_Strict):
    """When to alert: detections in a frame that pass every condition, in k of the last n frames of a stream."""

    name: Name = Field(description="Rule name; appears in every alert it raises.")
    streams: StreamPatterns = ["*"]
    labels: list[str] = Field(default_factory=list, description="Labels that count; empty: every label.")
    min_score: float = Field(0.5, ge=0, le=1, description="Detections scoring less do not count.")
    min_count: int = Field(1, ge=1, le=10_000, description="Detections of one label a frame needs to count.")
    zone: list[RelativePoint] | None = Field(
        None,
        min_length=3,
        description="Polygon in relative coordinates (0-1, x right, y down): a box counts when its centre is "
        "inside. None: the whole frame.",
    )
    k: int = Field(1, ge=1, le=1000, description="Frames, of the last n, that must count for the alert.")
    n: int = Field(1, ge=1, le=1000, description="Window of frames per stream and label.")
    cooldown_s: float = Field(60.0, ge=0, le=86_400, description="No second alert per stream and label within this.")
    actions: list[Name] = Field(min_length=1, description="Names of the sink's actions to run for each alert.")

    @model_validator(mode="after")
    def _k_within_n(self) -> Self:
        if self.k > self.n:
            raise ValueError(f"k ({self.k}) must not exceed n ({self.n}): an alert needs k of the last n frames")
        return self


class AlertSinkConfig(ConsumerConfig):
    """Rules over the results; alerts go to a stream of their own, from which each action delivers them."""

    kind: Literal["alert"] = "alert"
    batch: int = Field(100, ge=1, le=10_000, description="Most results read at once per stream.")
    rules: list[AlertRuleConfig] = Field(min_length=1, max_length=1000, description="Alert rules.")
    actions: dict[Name, ActionConfig] = Field(min_length=1, description="Named actions the rules refer to.")
    alerts_maxlen: int = Field(
        100_000, ge=100, le=10_000_000, description="Alerts kept (queued for delivery) in the alerts stream."
    )
    retry_initial_s: float = Field(1.0, gt=0, le=600, description="First wait before retrying a failed delivery.")
    retry_max_s: float = Field(60.0, gt=0, le=3600, description="Longest wait between delivery retries.")

    @model_validator(mode="after")
    def _actions_exist(self) -> Self:
        for rule in self.rules:
            unknown = [a for a in rule.actions if a not in self.actions]
            if unknown:
                raise ValueError(
                    f"rule {rule.name!r} names actions {unknown} that are not defined; actions: {list(self.actions)}"
                )
        return self


class WebSinkConfig(_Strict):
    """A live web view: each stream's latest frame with its boxes drawn, recent detections, fps and latency.

    Not a consumer group: it follows the result streams with plain XREAD (like ``sink tail``), so it never takes
    results from the other sinks, and nothing waits on it."""

    kind: Literal["web"] = "web"
    name: Name = Field(description="Sink name (for --sink).")
    streams: StreamPatterns = ["*"]
    host: str = Field(
        "127.0.0.1",
        pattern=r"^[A-Za-z0-9.:\-]{1,253}$",
        description="Address to serve on; the page has no login, so 0.0.0.0 shows the streams to the whole network.",
    )
    port: int = Field(8080, ge=1, le=65535, description="TCP port to serve on.")
    history: int = Field(50, ge=1, le=10_000, description="Recent detections kept (and listed) per stream.")
    window_s: float = Field(10.0, ge=1, le=3600, description="fps and latency are over the results of this window.")
    jpeg_quality: int = Field(80, ge=10, le=100, description="JPEG quality of the frames served.")
    block_ms: int = Field(1000, ge=1, le=600_000, description="Longest blocking read of the result streams.")
    rescan_s: float = Field(5.0, gt=0, le=3600, description="How often stream patterns are re-resolved.")


SinkConfig = Annotated[
    JsonlSinkConfig | SqliteSinkConfig | PostgresSinkConfig | AlertSinkConfig | WebSinkConfig,
    Field(discriminator="kind"),
]
StoreSinkConfig = JsonlSinkConfig | SqliteSinkConfig | PostgresSinkConfig


# ---------------------------------------------------------------------------------------------------- stack
class StackConfig(_Strict):
    redis: RedisConfig = Field(default_factory=RedisConfig)
    streams: StreamsConfig = Field(default_factory=StreamsConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    sinks: Annotated[list[SinkConfig], _unique_names("sink")] = Field(
        default_factory=list,
        max_length=64,
        description="Sinks, each its own consumer group on the results (a web view reads them without one).",
    )

    @model_validator(mode="after")
    def _timeouts_exceed_blocking(self) -> Self:
        # redis-py silently re-sends a blocking read that outlives socket_timeout; forbid that setup.
        longest = max([p.block_ms for p in self.detector.pools] + [s.block_ms for s in self.sinks], default=0)
        if longest >= self.redis.socket_timeout_s * 1000:
            raise ValueError(
                f"redis.socket_timeout_s ({self.redis.socket_timeout_s}) must exceed the longest block_ms "
                f"({longest} ms): raise socket_timeout_s or lower block_ms"
            )
        return self

    def pool(self, name: str) -> PoolConfig:
        for p in self.detector.pools:
            if p.name == name:
                return p
        raise KeyError(f"no detector pool named {name!r}; pools: {[p.name for p in self.detector.pools]}")

    def sink(self, name: str) -> SinkConfig:
        for s in self.sinks:
            if s.name == name:
                return s
        raise KeyError(f"no sink named {name!r}; sinks: {[s.name for s in self.sinks]}")


# ---------------------------------------------------------------------------------------------------- loading
def load_config(path: Path | str, environ: Mapping[str, str] | None = None) -> StackConfig:
    """Read, override from the environment, and validate; raises :class:`ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the config file: {exc.strerror or exc}"]) from None
    return parse_config(text, source=str(path), base_dir=path.resolve().parent, environ=environ)


def parse_config(
    text: str,
    *,
    source: str = "<config>",
    base_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> StackConfig:
    """Validate YAML text; every error line reads ``source:LINE: field.path: message``."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text) if root is not None else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ConfigError([f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{source}:1: the file must be a YAML mapping (redis:, streams:, ingest: ...)"])
    overridden = _apply_env(data, os.environ if environ is None else environ)
    try:
        return StackConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError([_describe(err, root, source, overridden) for err in exc.errors()]) from None


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> dict[tuple[str, ...], str]:
    """Apply overrides in place; returns which field paths came from which variable."""
    overrides: dict[tuple[str, ...], str] = {}
    if environ.get("REDIS_URL"):
        overrides[("redis", "url")] = "REDIS_URL"
        _set(data, ("redis", "url"), environ["REDIS_URL"])
    for name, value in environ.items():
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX):
            fields = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
            overrides[fields] = name
            _set(data, fields, yaml.safe_load(value))
    return overrides


def _set(data: dict[str, Any], fields: tuple[str, ...], value: Any) -> None:
    node: Any = data
    for field in fields[:-1]:
        if isinstance(node, list):  # a list of named items (pools, sinks, cameras): pick one by its name
            node = next((c for c in node if isinstance(c, dict) and str(c.get("name", "")).lower() == field), None)
            if node is None:
                variable = ENV_PREFIX + "__".join(fields).upper()
                raise ConfigError([f"environment {variable}: no item named {field!r} in that list"])
            continue
        child = node.get(field)
        if not isinstance(child, dict | list):
            child = node[field] = {}
        node = child
    node[fields[-1]] = value


def _describe(err: Mapping[str, Any], root: yaml.Node | None, source: str, env: dict[tuple[str, ...], str]) -> str:
    loc: Sequence[Any] = err["loc"]
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "<root>"
    message = err["msg"]
    value, kind = err.get("input"), str(err.get("type"))
    # Values are shown with URL passwords hidden, headers (tokens) never, and a section (which could hold either)
    # only by its type, when that is the error.
    shown = None
    if kind not in ("missing", "extra_forbidden") and "input" in err and "headers" not in loc:
        if isinstance(value, str):
            shown = repr(redact_text(redact(value)))
        elif isinstance(value, int | float | bool | None):
            shown = repr(value)
        elif kind.endswith("_type"):
            shown = f"a {type(value).__name__}"
    if shown is not None:
        message += f" (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
    for fields, variable in env.items():
        if tuple(str(p) for p in loc[: len(fields)]) == fields:
            return f"environment {variable}: {field}: {message}"
    return f"{source}:{_line_of(root, loc)}: {field}: {message}"


def _line_of(node: yaml.Node | None, loc: Sequence[Any]) -> int:
    """1-based line of the deepest YAML node along a pydantic error location."""
    line = 1 if node is None else node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if getattr(k, "value", None) == str(part)), None)
            if match is None:
                # Union tags ('synthetic') are not in the file, and a missing key points at its parent.
                continue
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            continue
        line = node.start_mark.line + 1
    return line
