"""One shape for every registry (samplers, membership attacks, detectors, mitigations, unlearners, probes): names
declared once, each to its entry; config checks and the CLI read the names, and an unknown name is refused in one
line that names the field and the choices."""

from collections.abc import Iterable, Iterator, Mapping
from typing import TypeVar

from diffaudit.errors import ConfigError

T = TypeVar("T")


class UnknownName(ConfigError, KeyError):
    """A name no registry entry carries (a KeyError too, so `in` and `.get` work as on a dict)."""

    def __str__(self) -> str:
        return str(self.args[0])


class Registry(Mapping[str, T]):
    """`what` names the kind of entry in messages, `field` the config field that chooses among them."""

    def __init__(self, what: str, field: str, entries: Mapping[str, T]):
        self.what, self.field, self._entries = what, field, dict(entries)

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownName(f"{self.field}: unknown {self.what} {name!r}; choose from "
                              f"{', '.join(self._entries)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def check(self, names: Iterable[str]) -> None:
        """Refuse, before any work starts, the first name here that is not registered."""
        for name in names:
            self[name]
