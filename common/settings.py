"""What every settings class is made of: strict models, paths resolved against the config's folder, names, stream
patterns, the consumer-group reader's settings, and the base class of each plug-in family.

Plug-in modules import this (never ``common.config``, which imports them while it builds its unions).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from common.keys import STREAM_NAME_PATTERN


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    value = value.expanduser()
    if base is not None and not value.is_absolute():
        return Path(base) / value
    return value


ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]
"""A path; relative ones are resolved against the config file's folder."""
Name = Annotated[str, Field(pattern=STREAM_NAME_PATTERN, description="Letters, digits, '_', '.', '-'.")]
StreamPatterns = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=128)]],
    Field(min_length=1, description="Stream names or glob patterns (fnmatch: *, ?, [abc])."),
]
RelativePoint = tuple[Annotated[float, Field(ge=0, le=1)], Annotated[float, Field(ge=0, le=1)]]
"""A point in relative frame coordinates (0-1, x right, y down)."""


class Strict(BaseModel):
    """Unknown fields are errors (a typo never passes silently); settings never change once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def unique_names(what: str) -> AfterValidator:
    """A list validator refusing two items with one name."""

    def check(items: list[Any]) -> list[Any]:
        names = [item.name for item in items]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate {what} names: {', '.join(dupes)}")
        return items

    return AfterValidator(check)


class ConsumerConfig(Strict):
    """What every consumer-group reader has: its streams, blocking, redelivery and claiming."""

    name: Name = Field(description="Pool or sink name; names its consumer group.")
    streams: StreamPatterns = Field(["*"])
    block_ms: int = Field(1000, ge=1, le=600_000, description="Longest blocking read.")
    max_deliveries: int = Field(3, ge=1, le=1000, description="Deliveries before an entry is dead-lettered.")
    claim_idle_ms: int = Field(
        30_000, ge=100, le=86_400_000, description="Claim entries a crashed consumer left pending this long."
    )
    rescan_s: float = Field(5.0, gt=0, le=3600, description="How often stream patterns are re-resolved.")


# ------------------------------------------------------------------------------------- plug-in family bases
# A plug-in's settings class derives from its family's base and fixes ``kind`` to a Literal with that default.
class SourceSettings(Strict):
    """A camera's source (``ingest.sources``)."""

    kind: str


class EngineSettings(Strict):
    """A detector pool's inference engine (``detector.engines``)."""

    kind: str
    needs: ClassVar[tuple[str, ...]] = ()
    """The modules the engine imports beyond the base install: what its extra of the same name installs."""
    gpu: int | str | None = Field("auto", description="GPU index; None: the CPU; auto: the engine's choice.")


class SinkSettings(Strict):
    """A sink: a process reading the result streams (``sink``)."""

    kind: str
    name: Name = Field(description="Sink name (for --sink).")
    streams: StreamPatterns = Field(["*"])
    block_ms: int = Field(1000, ge=1, le=600_000, description="Longest blocking read.")


class ConsumerSinkSettings(SinkSettings, ConsumerConfig):
    """A sink that reads through a consumer group of its own (every sink but a live view)."""

    batch: int = Field(100, ge=1, le=10_000, description="Most results read at once per stream.")


class ReadsEvents(Strict):
    """A sink that may read a tracker sink's events instead of the results (stores, alert sinks)."""

    events_of: Name | None = Field(
        None,
        description="Tracker sink (kind tracker) whose events this sink reads instead of the results, on the cameras "
        "its streams match; None: the results.",
    )


def events_of(sink: object) -> str | None:
    """The tracker sink whose events ``sink`` reads; None when it reads the results (or nothing)."""
    return sink.events_of if isinstance(sink, ReadsEvents) else None


class StoreSettings(ConsumerSinkSettings, ReadsEvents):
    """A sink that keeps every result, or every event of a tracker (``sink.stores``)."""

    keeps_events: ClassVar[bool] = False
    """The store kind can keep events (its store has ``write_events``): set True in its settings class."""
    batch: int = Field(100, ge=1, le=10_000, description="Most messages read (and stored in one batch) per stream.")

    @field_validator("events_of")
    @classmethod
    def _can_keep_events(cls, value: str | None) -> str | None:
        if value is not None and not cls.keeps_events:
            kind = cls.model_fields["kind"].default
            raise ValueError(
                f"the {kind} store cannot keep a tracker's events: remove events_of, or use a store kind that can "
                f"(sqlite, postgres, jsonl)"
            )
        return value


class ActionSettings(Strict):
    """What an alert sink does with an alert (``sink.alerts.actions``)."""

    kind: str
