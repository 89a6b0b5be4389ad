"""The tracker sink's settings: zones and lines validated with errors that name the field and the fix, and each
camera given the areas of the first pattern it matches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from common.config import ConfigError, StackConfig, load_config
from sink.tracker import TrackerSinkConfig


def config_error(tmp_path: Path, tracker: dict[str, Any]) -> str:
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump({"sinks": [{"kind": "tracker", "name": "objects", **tracker}]}))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return "\n".join(caught.value.problems)


def test_a_camera_takes_the_areas_of_the_first_pattern_it_matches() -> None:
    sink = TrackerSinkConfig.model_validate({
        "name": "objects",
        "cameras": {
            "door-1": {"zones": [{"name": "porch", "polygon": [[0, 0], [1, 0], [1, 1]]}]},
            "door-*": {"lines": [{"name": "gate", "points": [[0, 0.5], [1, 0.5]]}]},
        },
    })  # fmt: skip
    assert [z.name for z in sink.areas("door-1").zones] == ["porch"] and sink.areas("door-1").lines == []
    assert [line.name for line in sink.areas("door-2").lines] == ["gate"]
    assert sink.areas("yard").zones == [] and sink.areas("yard").lines == []


@pytest.mark.parametrize(
    ("tracker", "expected"),
    [
        ({"cameras": {"*": {"zones": [{"name": "a", "polygon": [[0, 0], [1, 1]]}]}}},
         "sinks[0].tracker.cameras.*.zones[0].polygon: List should have at least 3 items"),
        ({"cameras": {"*": {"zones": [{"name": "a", "polygon": [[0, 0], [1.5, 0], [1, 1]]}]}}},
         "sinks[0].tracker.cameras.*.zones[0].polygon[1][0]: Input should be less than or equal to 1"),
        ({"cameras": {"*": {"lines": [{"name": "g", "points": [[0.5, 0.5], [0.5, 0.5]]}]}}},
         "line 'g' has both points at (0.5, 0.5): it needs two different points"),
        ({"cameras": {"*": {"zones": [{"name": "a", "polygon": [[0, 0], [1, 0], [1, 1]]},
                                      {"name": "a", "polygon": [[0, 0], [1, 0], [0, 1]]}]}}},
         "duplicate zone names: a"),
        ({"cameras": {"*": {"zones": [{"name": "a:b", "polygon": [[0, 0], [1, 0], [1, 1]]}]}}},
         "sinks[0].tracker.cameras.*.zones[0].name: String should match pattern"),
        ({"low_score": 0.7, "high_score": 0.5}, "low_score (0.7) must not exceed high_score (0.5)"),
        ({"lease_s": 1, "block_ms": 1000}, "block_ms (1000) must be at most a third of lease_s (1.0 s)"),
        ({"max_age_s": 0}, "sinks[0].tracker.max_age_s: Input should be greater than 0"),
        ({"min_hits": 2, "mystery": 1}, "sinks[0].tracker.mystery: Extra inputs are not permitted"),
    ],
)  # fmt: skip
def test_bad_settings_are_refused_naming_the_field(tmp_path: Path, tracker: dict[str, Any], expected: str) -> None:
    problems = config_error(tmp_path, tracker)
    assert expected in problems, problems
    assert "stack.yaml:" in problems  # and the line


def test_a_store_reading_events_must_name_a_tracker() -> None:
    with pytest.raises(ValueError, match=r"events_of: 'view' is a sink of kind web, not a tracker sink"):
        StackConfig.model_validate({"sinks": [
            {"kind": "web", "name": "view"},
            {"kind": "sqlite", "name": "db", "path": "e.db", "events_of": "view"},
        ]})  # fmt: skip
