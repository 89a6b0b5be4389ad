"""Plug-in families: camera sources, inference engines, result stores, alert actions and sink kinds.

A plug-in is one module in its family's package. It declares its settings class beside its code (a subclass of the
family's base in :mod:`common.settings`, with ``kind`` fixed to a ``Literal``) and registers both at import::

    class MemoryStoreConfig(StoreSettings):
        kind: Literal["memory"] = "memory"

    STORES.register(MemoryStoreConfig, MemoryStore)

A family is discovered the first time it is used: every module of its package is imported (modules whose name
starts with ``_`` excepted; for sink kinds, every sub-package), then every ``streamyolo.<family>`` entry point of
the installed distributions (a plug-in shipped apart). The config's discriminated unions (:meth:`Family.union`)
and the factories (:meth:`Family.factory`) are built from what registered, so adding a plug-in is adding a file.
Plug-in modules import their frameworks (TensorFlow, torch, onnxruntime) inside the code that needs them, and never
``common.config`` (which imports them while it builds its unions): discovery imports them all.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
import threading
from collections.abc import Callable
from typing import Annotated, Any, Generic, TypeVar, Union

from pydantic import Discriminator, Tag

from common.settings import ActionSettings, EngineSettings, SinkSettings, SourceSettings, StoreSettings, Strict

S = TypeVar("S", bound=Strict)


class PluginError(LookupError):
    """A plug-in that cannot be found or loaded: the message names the family, the kind or module, and the fix."""


class Family(Generic[S]):
    """One family of plug-ins: kind -> settings class, settings class -> factory."""

    def __init__(
        self,
        name: str,
        package: str,
        base: type[S],
        *,
        default: str | None = None,
        includes: tuple[Family[Any], ...] = (),
        packages_only: bool = False,
    ) -> None:
        self.name = name
        self.package = package
        """Where the family's plug-in modules live (imported by name: ``common`` does not import the services)."""
        self.base = base
        self.default = default
        """The kind of settings that name none (e.g. an engine given only its GPU from the environment)."""
        self.includes = includes
        """Families whose kinds are kinds of this one too (every store is a sink kind)."""
        self.packages_only = packages_only
        """Plug-ins are the package's sub-packages only (a sink kind is a room of its own), not its modules."""
        self._kinds: dict[str, type[S]] = {}
        self._factories: dict[type[Any], Callable[..., Any] | str] = {}
        self._discovered = False
        self._lock = threading.RLock()

    # ---------------------------------------------------------------------------------------------- registering
    def register(self, settings: type[S], factory: Callable[..., Any] | str | None = None) -> type[S]:
        """Register a settings class (its ``kind`` default names it) and what its settings make: a callable, or
        ``"module:name"`` of one, imported when first used (a sink kind's runner needs the service machinery,
        which must not load while the config is being built). An abstract base (no ``kind`` default) may register
        only a factory: every kind deriving from it without one of its own gets it (the runner every store kind
        shares)."""
        if not issubclass(settings, self.base):
            raise PluginError(f"{settings.__qualname__} must derive from {self.base.__qualname__} to be a {self.name}")
        kind = settings.model_fields["kind"].default
        if isinstance(kind, str):
            known = self._kinds.get(kind)
            if known is not None and known is not settings:
                raise PluginError(
                    f"two {self.name} plug-ins are called {kind!r}: {_where(known)} and {_where(settings)}; rename one"
                )
            self._kinds[kind] = settings
        elif factory is None:
            raise PluginError(f"{settings.__qualname__} has no kind (a Literal default) and no factory to register")
        if factory is not None:
            self._factories[settings] = factory
        return settings

    # ---------------------------------------------------------------------------------------------- using
    def discover(self) -> None:
        """Import every plug-in module of the family once (and of the families it includes). Re-entrant: a plug-in
        package whose parent declares settings over this family (the alert sink over its actions) discovers it
        from inside the parent's import, and the outer discovery then finds those modules imported."""
        with self._lock:
            if not self._discovered:
                package = importlib.import_module(self.package)
                for info in pkgutil.iter_modules(package.__path__, self.package + "."):
                    if not info.name.rsplit(".", 1)[-1].startswith("_") and (info.ispkg or not self.packages_only):
                        importlib.import_module(info.name)
                for point in importlib.metadata.entry_points(group=f"streamyolo.{self.name}"):
                    try:
                        point.load()
                    except Exception as exc:  # a third party's plug-in: say which, and how to get rid of it
                        raise PluginError(
                            f"the {self.name} plug-in {point.name!r} ({point.value}) failed to load: "
                            f"{type(exc).__name__}: {exc}; fix or uninstall it"
                        ) from exc
                self._discovered = True
        for other in self.includes:
            other.discover()

    def kinds(self) -> dict[str, type[S]]:
        """Every registered kind and its settings class, in name order."""
        self.discover()
        found: dict[str, type[Any]] = {}
        for other in self.includes:
            found.update(other.kinds())
        found.update(self._kinds)
        return dict(sorted(found.items()))

    def union(self) -> Any:
        """The discriminated union of every kind's settings, for a config field (tags are the kinds, so an error's
        location reads ``...engine.torch.gpu`` as before)."""
        members = [Annotated[cls, Tag(kind)] for kind, cls in self.kinds().items()]
        if not members:
            raise PluginError(f"no {self.name} plug-in found in {self.package}")
        return Annotated[Union[tuple(members)], Discriminator(self._kind_of)]  # noqa: UP007 (built at run time)

    def factory(self, settings: Strict) -> Callable[..., Any]:
        """What the settings' class (or its nearest base registered here) registered to make its plug-in; a kind
        of an included family is made by what its base registered here (every store kind: the store runner)."""
        self.discover()
        for cls in type(settings).__mro__:
            found = self._factories.get(cls)
            if isinstance(found, str):
                module, _, name = found.partition(":")
                found = self._factories[cls] = getattr(importlib.import_module(module), name)
            if found is not None:
                return found
        raise PluginError(f"the {self.name} kind {getattr(settings, 'kind', '?')!r} registered nothing to run it")

    def _kind_of(self, value: Any) -> str | None:
        if isinstance(value, dict):
            return value.get("kind", self.default)
        return getattr(value, "kind", None)


def _where(cls: type[Any]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


SOURCES: Family[SourceSettings] = Family("sources", "ingest.sources", SourceSettings)
ENGINES: Family[EngineSettings] = Family("engines", "detector.engines", EngineSettings, default="tensorflow")
STORES: Family[StoreSettings] = Family("stores", "sink.stores", StoreSettings)
ACTIONS: Family[ActionSettings] = Family("actions", "sink.alerts.actions", ActionSettings)
SINKS: Family[SinkSettings] = Family("sinks", "sink", SinkSettings, includes=(STORES,), packages_only=True)
"""Sink kinds: a sub-package of ``sink`` registers its kind (alerts, web); every store is a sink kind too."""
