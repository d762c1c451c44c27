"""Registries open to other packages: a name -> object mapping that also reads a Python
entry-point group once, on first use (methods ``ntksap.methods``, models ``ntksap.models``,
data sets ``ntksap.datasets``). A broken plugin is left out with a warning, never breaking
ntksap itself."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Any

from .errors import ConfigError


class PluginRegistry(dict):
    """Name -> registered object; on first read also registers every entry point of
    ``group`` through ``register(name, loaded_object)``."""

    def __init__(self, group: str, what: str, register: Callable[[str, Any], Any],
                 builtins: dict[str, Any] | None = None) -> None:
        super().__init__(builtins or {})
        self.group, self.what, self._register = group, what, register
        self._loaded = False

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for entry in metadata.entry_points(group=self.group):
            try:
                self._register(entry.name, entry.load())
            except Exception as err:  # noqa: BLE001 - a broken plugin must not break ntksap
                warnings.warn(f"ntksap: cannot load {self.what} {entry.name!r} from entry "
                              f"point {entry.value!r} ({type(err).__name__}: {err}); it is "
                              "left out", stacklevel=3)

    def own(self, name: str) -> Any:
        """The object registered under ``name`` without reading the entry points (for the
        registering function's own check of a taken name)."""
        return dict.get(self, name)

    def put(self, name: str, value: Any) -> None:
        dict.__setitem__(self, name, value)

    def put_own(self, name: str, value: Any, caller: str) -> None:
        """Register ``value`` (an object with an ``origin``: the user's factory) under
        ``name``; the same origin again replaces its entry, another origin under a taken name
        is a :class:`ConfigError` from ``caller`` (e.g. "register_model")."""
        taken = self.own(name)
        if taken is not None and taken.origin is not value.origin:
            raise ConfigError(f"{caller}: the name {name!r} is taken; give the {self.what} "
                              "another name")
        self.put(name, value)

    def __getitem__(self, name: str) -> Any:
        self._load()
        return super().__getitem__(name)

    def __contains__(self, name: object) -> bool:
        self._load()
        return super().__contains__(name)

    def __iter__(self) -> Iterator[str]:
        self._load()
        return super().__iter__()

    def __len__(self) -> int:
        self._load()
        return super().__len__()

    def get(self, name: str, default: Any = None) -> Any:
        self._load()
        return super().get(name, default)

    def keys(self):  # type: ignore[override]
        self._load()
        return super().keys()

    def values(self):  # type: ignore[override]
        self._load()
        return super().values()

    def items(self):  # type: ignore[override]
        self._load()
        return super().items()
