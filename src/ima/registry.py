"""Name -> factory registries, with user factories given as ``"package.module:function"``.

Datasets and models are chosen by name in configs and on the command line. A name
containing ``":"`` is never looked up in the registry: it is imported, so users can plug
in their own code without registering it first.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

__all__ = ["Registry", "import_object"]

logger = logging.getLogger(__name__)

_SPEC_FORM = "'package.module:function'"


def import_object(spec: str) -> Any:
    """Import and return the object named by ``spec`` = ``"package.module:attr"``.

    ``attr`` may be dotted (``"pkg.mod:Class.method"``). The object need not be callable;
    ``Registry.get`` checks that. Raises ``ValueError`` naming ``spec`` when it is
    malformed, its module cannot be imported, or the attribute is missing.
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a string like {_SPEC_FORM}, got {type(spec).__name__}")
    module_name, sep, attr_path = spec.partition(":")
    if (
        not sep
        or not module_name.strip()
        or not attr_path.strip()
        or ":" in attr_path
        or module_name.startswith(".")
    ):
        raise ValueError(f"spec must look like {_SPEC_FORM} (absolute module), got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(
            f"cannot import module {module_name!r} named in {spec!r}: {err}. "
            "Is it installed, or is its folder on PYTHONPATH?"
        ) from err
    obj: Any = module
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as err:
            raise ValueError(
                f"module {module_name!r} has no attribute {attr_path!r} (from {spec!r})"
            ) from err
    return obj


class Registry:
    """A named collection of factories of one kind (e.g. ``"dataset"``, ``"model"``).

    ``get``/``build`` also accept ``"package.module:function"``, resolved by import.
    """

    def __init__(self, kind: str) -> None:
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"kind must be a non-empty string, got {kind!r}")
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator registering a factory under ``name``; returns the factory unchanged."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if ":" in name:
            raise ValueError(
                f"{self.kind} name must not contain ':' (reserved for {_SPEC_FORM}), got {name!r}"
            )
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")

        def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
            if not callable(factory):
                raise TypeError(
                    f"{self.kind} factory for {name!r} must be callable, "
                    f"got {type(factory).__name__}"
                )
            self._entries[name] = factory
            return factory

        return decorator

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def get(self, name: str) -> Callable[..., Any]:
        """Return the factory registered as ``name``, or imported from ``"pkg.mod:fn"``."""
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} name must be a string, got {type(name).__name__}")
        if ":" in name:
            factory = import_object(name)
            if not callable(factory):
                raise ValueError(
                    f"{self.kind} factory {name!r} is not callable "
                    f"(it is a {type(factory).__name__})"
                )
            logger.debug("resolved %s factory %r to %r", self.kind, name, factory)
            return factory
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(repr(n) for n in self.names()) or "none"
            raise ValueError(
                f"unknown {self.kind} {name!r}; known: {known} (or a user factory {_SPEC_FORM})"
            ) from None

    def build(self, name: str, **kwargs: Any) -> Any:
        """Call the factory for ``name`` with ``kwargs`` and return its result."""
        return self.get(name)(**kwargs)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()})"
