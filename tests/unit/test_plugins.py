"""The plug-in registry on a family of its own: discovery of a package's modules, kinds and their errors, the
discriminated union, and factories given as "module:name"."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, ValidationError

from common.plugins import Family, PluginError
from common.settings import Strict


class ThingSettings(Strict):
    kind: str


PLUGIN = """
from typing import Literal
from tests.unit.test_plugins import ThingSettings
from {package} import THINGS

class {name}Settings(ThingSettings):
    kind: Literal["{kind}"] = "{kind}"
    size: int = 1

THINGS.register({name}Settings, "{package}._made:{name}")
"""


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A package of two plug-ins, a private module that is not one, and the factories they name."""
    name = f"things_{tmp_path.name.replace('-', '_')}"
    folder = tmp_path / name
    folder.mkdir()
    (folder / "__init__.py").write_text(
        "from common.plugins import Family\nfrom tests.unit.test_plugins import ThingSettings\n"
        f"THINGS = Family('things', {name!r}, ThingSettings, default='round')\n"
    )
    (folder / "round.py").write_text(PLUGIN.format(package=name, name="Round", kind="round"))
    (folder / "square.py").write_text(PLUGIN.format(package=name, name="Square", kind="square"))
    (folder / "_made.py").write_text("def Round(cfg):\n    return ('round', cfg.size)\n\nSquare = None\n")
    (folder / "_broken.py").write_text("raise RuntimeError('a private module is never imported by discovery')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]


def family(package: str) -> Family[ThingSettings]:
    things: Family[ThingSettings] = __import__(package).THINGS
    return things


def test_discovery_finds_each_module_kind_and_builds_the_union(package: str) -> None:
    things = family(package)
    assert list(things.kinds()) == ["round", "square"]

    class Holder(BaseModel):
        thing: things.union()  # type: ignore[valid-type]

    assert Holder.model_validate({"thing": {"kind": "square", "size": 3}}).thing.kind == "square"
    assert Holder.model_validate({"thing": {"size": 2}}).thing.kind == "round"  # the family's default kind
    with pytest.raises(ValidationError, match="'hexagon'"):
        Holder.model_validate({"thing": {"kind": "hexagon"}})
    with pytest.raises(ValidationError, match="size"):
        Holder.model_validate({"thing": {"kind": "round", "size": "big"}})


def test_a_factory_named_as_module_and_name_loads_when_first_used(package: str) -> None:
    things = family(package)
    assert f"{package}._made" not in sys.modules
    settings = things.kinds()["round"].model_validate({"size": 5})
    assert things.factory(settings)(settings) == ("round", 5)
    square = things.kinds()["square"].model_validate({})
    with pytest.raises(PluginError, match="registered nothing"):
        things.factory(square)  # its "module:name" names None


def test_registration_refuses_a_second_kind_of_one_name_a_stranger_and_a_nameless_class(package: str) -> None:
    things = family(package)
    things.discover()

    class Again(ThingSettings):
        kind: Literal["round"] = "round"

    with pytest.raises(PluginError, match="two things plug-ins are called 'round'"):
        things.register(Again)

    class Stranger(Strict):
        kind: Literal["x"] = "x"

    with pytest.raises(PluginError, match="must derive from ThingSettings"):
        things.register(Stranger)  # type: ignore[arg-type]
    with pytest.raises(PluginError, match="no kind"):
        things.register(ThingSettings)


def test_an_abstract_base_registered_with_a_factory_serves_its_kinds(package: str) -> None:
    things: Family[ThingSettings] = Family("bases", package, ThingSettings)

    class Box(ThingSettings):
        kind: Literal["box"] = "box"

    things.register(ThingSettings, lambda cfg: f"made {cfg.kind}")
    things.register(Box)
    assert things.factory(Box())(Box()) == "made box"
