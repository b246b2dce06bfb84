"""Registries: one per pluggable family (models, data sets, pruning strategies, schedules,
initializations). An entry owns everything about its option: the callable, its settings
dataclass (the schema Hydra checks, stored as `base_<name>` in its config group), its label
for run names and reports, and its constraints. Validation, labels and identity are derived
from the entries, so adding an option is one entry (one Python file) and one YAML.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Generic, Protocol, TypeVar


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


def check(ok: bool, message: str) -> None:
    """Raise ValueError(message) unless ok (the settings' `__post_init__` checks)."""
    if not ok:
        raise ValueError(message)
