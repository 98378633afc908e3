"""Finding the pipeline named by a ``TARGET`` such as ``jobs/ticks.py:p`` or ``jobs.ticks:build``.

* ``path/to/file.py:attr`` loads the file as a module named after its stem
  (unless that name is already taken, e.g. by the standard library, in which
  case a private name is used) with the file's directory first on
  ``sys.path``, so the file can import its siblings. Nothing else is added.
* ``package.module:attr`` imports the module with the current directory first
  on ``sys.path`` (as ``python -m`` and uvicorn do).
* ``attr`` (dotted paths allowed) is an ``es.Pipeline`` or a function called
  with no arguments that returns one.

Every failure is a :class:`ConfigError` saying what was found and what is
expected; an exception raised by the user's module while it loads is
reported with the file and line it came from. Definition errors raised while
the pipeline is built stay :class:`DefinitionError`.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from eventspine.dataflow.pipeline import Pipeline
from eventspine.errors import ConfigError, EventspineError

__all__ = ["load_pipeline"]

_FORM = "path/to/file.py:attr or package.module:attr"


def load_pipeline(target: str) -> Pipeline:
    """Return the pipeline named by ``target`` (see the module docstring).

    Raises:
        ConfigError: the target is malformed, or the file, module or attribute does not
            exist, fails to load, or is not a pipeline.
        DefinitionError: the pipeline definition itself is invalid.
    """
    where, sep, attr = target.rpartition(":")
    if not sep or not where or not attr:
        raise ConfigError(f"target '{target}' is not of the form {_FORM} (e.g. ticks.py:pipeline)")
    if where.endswith(".py") or "/" in where or os.sep in where:
        module = _load_file(Path(where), target)
    else:
        module = _import_module(where, target)
    obj = _resolve(module, attr, where)
    return _as_pipeline(obj, attr, where)


def _load_file(path: Path, target: str) -> ModuleType:
    if not path.is_file():
        hint = "" if path.suffix == ".py" else f"; give a Python file ({_FORM})"
        raise ConfigError(f"target '{target}': the file '{path}' does not exist{hint}")
    path = path.resolve()
    name = path.stem if path.stem.isidentifier() else "eventspine_target"
    if name in sys.modules:
        name = f"eventspine_target_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"target '{target}': '{path}' cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except EventspineError:
        raise
    except BaseException as exc:
        sys.modules.pop(name, None)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise ConfigError(f"loading '{path}' {_raised(exc)}") from exc
    return module


def _import_module(name: str, target: str) -> ModuleType:
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except EventspineError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise ConfigError(
                f"target '{target}': no module named '{exc.name}' (looked in the current "
                f"directory and the installed packages); give {_FORM}"
            ) from exc
        raise ConfigError(f"importing module '{name}' {_raised(exc)}") from exc
    except Exception as exc:
        raise ConfigError(f"importing module '{name}' {_raised(exc)}") from exc


def _resolve(module: ModuleType, attr: str, where: str) -> Any:
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            found = sorted(
                n for n, v in vars(module).items() if isinstance(v, Pipeline) or _is_factory(v)
            )
            hint = (
                f"; pipelines and functions defined there: {', '.join(found)}"
                if found
                else "; it defines no es.Pipeline"
            )
            raise ConfigError(f"'{where}' has no attribute '{attr}'{hint}")
        obj = getattr(obj, part)
    return obj


def _as_pipeline(obj: Any, attr: str, where: str) -> Pipeline:
    if isinstance(obj, Pipeline):
        return obj
    expected = "an es.Pipeline or a function taking no arguments that returns one"
    if not callable(obj) or isinstance(obj, type):
        raise ConfigError(f"'{where}:{attr}' is {_describe(obj)}; expected {expected}")
    required = _required_params(obj)
    if required:
        raise ConfigError(
            f"'{where}:{attr}' is a function that needs argument(s) {', '.join(required)}; "
            f"expected {expected}"
        )
    try:
        result = obj()
    except EventspineError:
        raise
    except Exception as exc:
        raise ConfigError(f"calling '{where}:{attr}()' {_raised(exc)}") from exc
    if not isinstance(result, Pipeline):
        raise ConfigError(
            f"'{where}:{attr}()' returned {_describe(result)}; expected an es.Pipeline"
        )
    return result


def _required_params(fn: Any) -> list[str]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    return [
        p.name
        for p in sig.parameters.values()
        if p.default is p.empty
        and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]


def _is_factory(v: Any) -> bool:
    return inspect.isfunction(v) and not v.__name__.startswith("_") and not _required_params(v)


def _describe(obj: Any) -> str:
    text = repr(obj)
    if len(text) > 80:
        text = text[:77] + "..."
    kind = type(obj).__name__
    article = "an" if kind[:1].lower() in "aeiou" else "a"
    return f"{article} {kind} ({text})"


def _raised(exc: BaseException) -> str:
    """``raised KeyError: 'x' (at file.py:12)``: the error and the innermost user frame."""
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if "importlib" not in f.filename]
    at = f" (at {user[-1].filename}:{user[-1].lineno})" if user else ""
    if isinstance(exc, SyntaxError) and exc.filename:
        at = f" (at {exc.filename}:{exc.lineno})"
    return (
        f"raised {type(exc).__name__}: {exc}{at}; fix the code (run with --debug for "
        f"the full traceback)"
    )
