"""A faster ``__init__`` for frozen, slotted dataclasses on the codec's hot path.

A frozen dataclass sets each field with ``object.__setattr__`` (the generic lookup path), which
made object creation the largest cost of decoding a frame. The slot descriptors can be called
directly instead: same result, same immutability afterwards (``__setattr__`` still raises),
about twice as fast. Used for :class:`~protocols.dlt645.frame.Frame` and the message classes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def fast_frozen_init(cls: type[T]) -> type[T]:
    """Replace ``cls.__init__`` with one that fills the slots through their descriptors.

    Only for ``@dataclass(frozen=True, slots=True)`` classes whose fields have plain
    defaults (no ``default_factory``) and no ``__post_init__``.
    """
    if not dataclasses.is_dataclass(cls) or hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} is not a plain frozen slots dataclass")
    namespace: dict[str, Any] = {}
    params: list[str] = []
    body: list[str] = []
    for f in dataclasses.fields(cls):
        if f.default_factory is not dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{f.name} uses default_factory")
        namespace[f"_set_{f.name}"] = getattr(cls, f.name).__set__
        if f.default is dataclasses.MISSING:
            params.append(f.name)
        else:
            namespace[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        body.append(f"    _set_{f.name}(self, {f.name})")
    source = f"def __init__(self, {', '.join(params)}):\n" + "\n".join(body or ["    pass"])
    exec(source, namespace)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls
