"""Registries: one per pluggable family (models, data sets, pruning strategies, schedules,
initializations). An entry owns everything about its option: the callable, its settings
dataclass (the schema Hydra checks, stored as `base_<name>` in its config group), its label
for run names and reports, and its constraints. Validation, labels and identity are derived
from the entries, so adding an option is one entry (one Python file) and one YAML.
"""

from __future__ import annotations

import functools
import importlib
import os
import pkgutil
from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Any, Generic, Protocol, TypeVar

PLUGINS_ENV = "EMERGENCE_LAB_PLUGINS"  # comma-separated modules that register options
PLUGINS_GROUP = "emergence_lab.plugins"  # the entry-point group of installed plugin packages


class Named(Protocol):
    name: str


E = TypeVar("E", bound=Named)


class Registry(Generic[E]):
    """Named entries of one family; an unknown name fails with the valid choices."""

    def __init__(self, field: str):
        self.field = field  # the config key that names an entry, e.g. "pruning.name"
        self._entries: dict[str, E] = {}

    def add(self, entry: E) -> E:
        """Register an entry; a name registered twice is a programming error."""
        if entry.name in self._entries:
            raise ValueError(f"{self.field}={entry.name!r} is registered twice")
        self._entries[entry.name] = entry
        return entry

    def __getitem__(self, name: str) -> E:
        if name not in self._entries:
            raise ValueError(f"{self.field} must be one of {sorted(self._entries)}, got {name!r}")
        return self._entries[name]

    def entry_for(self, settings: Any, group: str | None = None) -> E:
        """The entry `settings.name` names; its settings must be that entry's dataclass (the
        option's YAML), not another option's with the name overridden."""
        entry = self[settings.name]
        group = group or self.field.rsplit(".", 1)[0]
        check(isinstance(settings, entry.settings),
              f"{group}.name={settings.name} has settings {entry.settings.__name__}: select it "
              f"with {group.split('.')[-1]}={settings.name} (its YAML), not by overriding "
              f"{group}.name")
        return entry

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[E]:
        return iter(self._entries.values())

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._entries)


def import_submodules(package: str) -> None:
    """Import every module and subpackage of `package` (its options register themselves), so
    that adding an option is adding a file."""
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")


def load_plugins() -> tuple[str, ...]:
    """Import the plugin modules (options registered from outside the package): those named in
    $EMERGENCE_LAB_PLUGINS (comma-separated) and the `emergence_lab.plugins` entry points of
    installed packages. Their YAMLs join Hydra's search path (`hydra.searchpath`). Called before
    a config is composed or validated and before a report; returns the modules imported."""
    names = [n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(",") if n.strip()]
    names += [ep.value for ep in entry_points(group=PLUGINS_GROUP)]
    return _import_all(tuple(names))


@functools.cache
def _import_all(names: tuple[str, ...]) -> tuple[str, ...]:
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ValueError(f"{PLUGINS_ENV}: plugin module {name!r} cannot be imported "
                             f"({exc}); put its folder on PYTHONPATH or install it") from None
    return names


def check(ok: bool, message: str) -> None:
    """Raise ValueError(message) unless ok (the settings' `__post_init__` checks)."""
    if not ok:
        raise ValueError(message)
