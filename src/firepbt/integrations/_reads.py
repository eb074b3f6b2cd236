"""Which keys the user's code reads from a mapping an adapter hands it (a LightningModule's
``hparams``, a Tune trainable's ``config``), so that the adapters can refuse, before the first
round, a hyperparameter that reaches nothing: a name no optimizer has and no code reads would be
"tuned" while every member trains at the default (the run looks right and is not).

A read is an item or attribute lookup, ``get``, ``pop``, ``setdefault`` or an iteration (``**``,
``keys()``, ``items()``: every key counts as read) made by code outside the libraries that
handle the mapping on the user's behalf (Lightning saving a checkpoint, Tune copying a config,
firepbt itself, torch, copy and pickle), found by the caller's module name."""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterable, Iterator
from typing import Any

#: modules whose reads are not the user's: they handle the mapping, they do not use its values
_LIBRARIES = ("lightning", "pytorch_lightning", "ray", "firepbt", "torch", "copy", "copyreg",
              "pickle")


def _from_user() -> bool:
    f = sys._getframe(2)  # the caller of the ReadTracking method that asks
    while f is not None:
        name = str(f.f_globals.get("__name__", ""))
        if name == __name__ or f.f_code.co_name == "__getattr__":  # (attribute access to items)
            f = f.f_back  # type: ignore[assignment]
            continue
        return not any(name == lib or name.startswith(lib + ".") for lib in _LIBRARIES)
    return False


class ReadTracking(dict[str, Any]):
    """A dict that adds every key the user's code reads to ``_firepbt_reads`` (a set its
    copies share: Tune hands ``setup`` a deep copy of the config)."""

    _firepbt_reads: set[str]

    def _note(self, keys: Iterable[Any]) -> None:
        if _from_user():
            self._firepbt_reads.update(str(k) for k in keys)

    def __getitem__(self, key: str) -> Any:
        self._note((key,))
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self._note((key,))
        return super().get(key, default)

    def pop(self, key: str, *default: Any) -> Any:
        self._note((key,))
        return super().pop(key, *default)

    def setdefault(self, key: str, default: Any = None) -> Any:
        self._note((key,))
        return super().setdefault(key, default)

    def __iter__(self) -> Iterator[str]:
        self._note(dict.keys(self))
        return super().__iter__()

    def keys(self) -> Any:
        self._note(dict.keys(self))
        return super().keys()

    def items(self) -> Any:
        self._note(dict.keys(self))
        return super().items()

    def values(self) -> Any:
        self._note(dict.keys(self))
        return super().values()

    def __copy__(self) -> ReadTracking:
        return tracking(type(self), dict(dict.items(self)), self._firepbt_reads)

    def __deepcopy__(self, memo: dict[int, Any]) -> ReadTracking:
        items = copy.deepcopy(dict(dict.items(self)), memo)
        return tracking(type(self), items, self._firepbt_reads)

    def __reduce__(self) -> Any:  # pickled as the plain mapping it wraps
        base = next(b for b in type(self).__mro__ if not issubclass(b, ReadTracking))
        return (base, (dict(dict.items(self)),))


def tracking(cls: type[ReadTracking], items: dict[str, Any], reads: set[str]) -> ReadTracking:
    """A ``cls`` holding ``items`` that records the user's reads into ``reads``."""
    out = cls(items)
    object.__setattr__(out, "_firepbt_reads", reads)  # (past an AttributeDict's setattr)
    return out


_CLASSES: dict[type, type[ReadTracking]] = {}


def track(mapping: Any, reads: set[str]) -> bool:
    """Makes ``mapping``, a dict subclass such as Lightning's ``AttributeDict``, record the
    user's reads into ``reads`` in place (whoever holds it keeps the same object); False where
    it cannot (not a dict subclass, an OmegaConf container)."""
    if not isinstance(mapping, ReadTracking):
        base = type(mapping)
        if not isinstance(mapping, dict) or base is dict:
            return False
        cls = _CLASSES.get(base)
        if cls is None:
            cls = _CLASSES[base] = type(f"ReadTracking{base.__name__}", (ReadTracking, base),
                                        {"__module__": __name__})
        try:
            object.__setattr__(mapping, "__class__", cls)  # (an AttributeDict's sets items)
        except TypeError:
            return False
    object.__setattr__(mapping, "_firepbt_reads", reads)
    return True
