"""What a wiring relies on in open_clip, stated as data and checked in one place.

A wiring patches open_clip from outside: it replaces module attributes that open_clip's functions
look up when they are called, wraps functions whose signatures it assumes, and reads formats (the
training log line, batch keys). Each wiring lists these as :class:`Needs` in its ``REQUIRES``;
:func:`problems` checks a list against the open_clip that is importable now, and returns one line per
thing that moved. The wirings run the check before they patch anything for a plugin run (a clear
refusal instead of a broken run), and ``tests/integration/test_wiring_requirements.py`` runs it against the
open_clip each wiring was written for.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import types
from dataclasses import dataclass
from typing import Any, Iterable, List, Sequence, Set, Tuple


@dataclass(frozen=True)
class Needs:
    """One open_clip object a wiring relies on, and what it relies on about it.

    ``name`` is a dotted path inside ``module`` (``"CLIPTask.prepare_batch"``). ``params``: its
    parameters start with these (positional use); ``keywords``: it accepts these by name;
    ``looks_up``: names its code (nested functions included) looks up when it runs, i.e. module
    attributes the wiring can swap or attributes it uses; ``constants``: string constants in its code
    (formats such as a log line prefix or a batch key); ``fields``: attributes a class or dataclass has.
    ``why`` says what the wiring does with it, for the message when it is gone."""

    module: str
    name: str
    why: str
    params: Tuple[str, ...] = ()
    keywords: Tuple[str, ...] = ()
    looks_up: Tuple[str, ...] = ()
    constants: Tuple[str, ...] = ()
    fields: Tuple[str, ...] = ()

    @property
    def where(self) -> str:
        return f"{self.module}.{self.name}"


def _code_objects(obj: Any) -> List[types.CodeType]:
    fn = inspect.unwrap(obj)
    code = getattr(fn, "__code__", None)
    out, todo = [], [code] if code is not None else []
    while todo:
        c = todo.pop()
        out.append(c)
        todo.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    return out


def _names(codes: Iterable[types.CodeType]) -> Set[str]:
    return {n for c in codes for n in c.co_names}


def _strings(codes: Iterable[types.CodeType]) -> List[str]:
    return [k for c in codes for k in c.co_consts if isinstance(k, str)]


def _module(name: str):
    """The loaded module ``name`` (also when it runs as ``__main__``: ``python -m open_clip_train.main``)."""
    if name in sys.modules:
        return sys.modules[name]
    main = sys.modules.get("__main__")
    if getattr(getattr(main, "__spec__", None), "name", None) == name:
        return main
    return importlib.import_module(name)


def _resolve(needs: Needs) -> Any:
    obj = _module(needs.module)
    for part in needs.name.split("."):
        obj = getattr(obj, part)
    return obj


def check(needs: Needs) -> List[str]:
    """What no longer holds about ``needs`` (empty: all of it holds)."""
    try:
        obj = _resolve(needs)
    except (ImportError, AttributeError) as e:
        return [f"{needs.where} is gone ({type(e).__name__}: {e}); the wiring {needs.why}"]
    out = []
    if needs.params or needs.keywords:
        try:
            params = list(inspect.signature(obj).parameters)
        except (TypeError, ValueError):
            params = []
        if needs.params and tuple(params[:len(needs.params)]) != needs.params:
            out.append(f"{needs.where} takes ({', '.join(params)}), not ({', '.join(needs.params)}, ...); "
                       f"the wiring {needs.why}")
        missing = [k for k in needs.keywords if k not in params]
        if missing and "kwargs" not in params:
            out.append(f"{needs.where} has no parameter {', '.join(missing)}; the wiring {needs.why}")
    if needs.looks_up or needs.constants:
        codes = _code_objects(obj)
        gone = [n for n in needs.looks_up if n not in _names(codes)]
        if gone:
            out.append(f"{needs.where} no longer looks up {', '.join(gone)} when it runs; the wiring {needs.why}")
        strings = _strings(codes)
        lost = [s for s in needs.constants if not any(s in k for k in strings)]
        if lost:
            out.append(f"{needs.where} no longer contains {', '.join(map(repr, lost))}; the wiring {needs.why}")
    if needs.fields:
        have = set(getattr(obj, "__dataclass_fields__", {})) | set(dir(obj))
        absent = [f for f in needs.fields if f not in have]
        if absent:
            out.append(f"{needs.where} has no {', '.join(absent)}; the wiring {needs.why}")
    return out


def problems(requirements: Sequence[Needs]) -> List[str]:
    """Every problem of every requirement, in order."""
    return [p for needs in requirements for p in check(needs)]
