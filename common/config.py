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
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self

import yaml
from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from common.keys import MAX_SHARDS, Keys
from common.plugins import ENGINES, SINKS, SOURCES
from common.redact import redact, redact_text
from common.redis_io.settings import RedisConfig
from common.settings import (
    ConfigPath,
    ConsumerConfig,
    EngineSettings,
    Name,
    ReadsEvents,
    SinkSettings,
    SourceSettings,
    Strict,
    unique_names,
)

ENV_PREFIX = "STREAMYOLO__"


class ConfigError(ValueError):
    """A config that cannot be used; ``problems`` holds one line per error, each naming field and line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# ---------------------------------------------------------------------------------------------------- redis
class StreamsConfig(Strict):
    prefix: str = Field(
        "yolo",
        pattern=r"^[A-Za-z0-9_.\-{}]{1,64}$",
        description="Key prefix; one Redis can host many stacks.",
    )
    frames_maxlen: int = Field(2000, ge=10, le=10_000_000, description="Approximate cap of each frames stream.")
    results_maxlen: int = Field(10_000, ge=10, le=10_000_000, description="Approximate cap of each results stream.")
    dead_maxlen: int = Field(10_000, ge=10, le=10_000_000, description="Approximate cap of the dead-letter stream.")
    shards: int = Field(
        12,
        ge=1,
        le=MAX_SHARDS,
        description="On a cluster (redis.cluster): the cameras are spread by name over this many shards, each a hash "
        "tag in their keys (a read per shard, not per camera; see docs/result-schema.md). Ignored on one server; "
        "every service of a stack must use the same count.",
    )


# ---------------------------------------------------------------------------------------------------- ingest
if TYPE_CHECKING:
    SourceConfig = SourceSettings
else:
    SourceConfig = SOURCES.union()
"""The settings of every kind of camera source, told apart by ``kind`` (see ``ingest.sources``)."""

RAW_MAX_SIDE = 640
"""Raw BGR frames are ~1 MB at 640x480; larger ones belong in JPEG."""


class CameraConfig(Strict):
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


class IngestConfig(Strict):
    cameras: Annotated[list[CameraConfig], unique_names("camera")] = Field(
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
class ModelConfig(Strict):
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


if TYPE_CHECKING:
    EngineConfig = EngineSettings
else:
    EngineConfig = ENGINES.union()
"""The settings of every kind of inference engine, told apart by ``kind`` (default: tensorflow; see
``detector.engines``)."""


class PoolConfig(ConsumerConfig):
    """A detector pool: one consumer group on the frames streams; its replicas are the consumers."""

    model: ModelConfig
    engine: EngineConfig = Field(default_factory=lambda: ENGINES.kinds()["tensorflow"].model_validate({}))
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
    shed_behind: int | None = Field(
        2,
        ge=0,
        le=1000,
        description="Graceful overload for live streams: a frame is inferred only if at most this many newer frames "
        "of its stream were waiting when it was read; older ones are shed (acked uninferred, counted per stream as "
        "shed, in Redis and in the metrics), and the freshest frames are batched first. A recording's frames are "
        "never shed. None: every frame in order, however late (until max_age_ms).",
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


class DetectorConfig(Strict):
    pools: Annotated[list[PoolConfig], unique_names("pool")] = Field(
        default_factory=list, max_length=64, description="Detector pools."
    )


# ---------------------------------------------------------------------------------------------------- sinks
if TYPE_CHECKING:
    SinkConfig = SinkSettings
else:
    SinkConfig = SINKS.union()
"""The settings of every kind of sink, told apart by ``kind`` (see ``sink``)."""


# ---------------------------------------------------------------------------------------------------- stack
class StackConfig(Strict):
    redis: RedisConfig = Field(default_factory=RedisConfig)
    streams: StreamsConfig = Field(default_factory=StreamsConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    sinks: Annotated[list[SinkConfig], unique_names("sink")] = Field(
        default_factory=list,
        max_length=64,
        description="Sinks, each its own consumer group on the results (a web view reads them without one).",
    )

    @field_validator("sinks")
    @classmethod
    def _events_of_trackers(cls, sinks: list[SinkConfig]) -> list[SinkConfig]:
        kinds = {s.name: s.kind for s in sinks}
        trackers = [name for name, kind in kinds.items() if kind == "tracker"]
        for i, sink in enumerate(sinks):
            if not isinstance(sink, ReadsEvents) or sink.events_of is None or kinds.get(sink.events_of) == "tracker":
                continue
            what = "no sink of that name" if sink.events_of not in kinds else f"a sink of kind {kinds[sink.events_of]}"
            raise ValueError(
                f"sinks[{i}] ({sink.name}).events_of: {sink.events_of!r} is {what}, not a tracker sink: name a sink of "
                f"kind tracker (here: {', '.join(trackers) or 'none; add one'})"
            )
        return sinks

    @property
    def keys(self) -> Keys:
        """The stack's key names: with shard tags on a cluster."""
        return Keys(self.streams.prefix, self.streams.shards if self.redis.cluster else None)

    @model_validator(mode="after")
    def _cluster_prefix(self) -> Self:
        if self.redis.cluster and ("{" in self.streams.prefix or "}" in self.streams.prefix):
            raise ValueError(
                f"streams.prefix {self.streams.prefix!r}: on a cluster (redis.cluster) the prefix holds no braces: "
                "the stack puts each camera's shard in its keys as the hash tag"
            )
        return self

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
