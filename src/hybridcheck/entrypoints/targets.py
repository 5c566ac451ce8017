"""TARGETs of ``hybridcheck verify``: ``path/to/file.py:NAME`` or
``package.module:NAME``, resolved the way ``python -m`` and ``python file.py`` do:
the working folder and the target file's own folder are importable, so a case file
can import its sibling modules and ``my_project.hybrid_case:CASE`` works from the
project folder with the console script as with ``python -m hybridcheck``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pathlib
import sys
from typing import Any

__all__ = ["TargetError", "check_target", "load_target"]


class TargetError(Exception):
    """A TARGET that cannot be turned into cases (exit code 2)."""


def _split(target: str) -> tuple[str, str, bool]:
    """(module or path, NAME, whether it is a file path)."""
    module_part, sep, name = str(target).rpartition(":")
    if not sep or not module_part or not name or not name.isidentifier():
        raise TargetError(
            "TARGET must be 'path/to/file.py:NAME' or 'package.module:NAME' (NAME a "
            f"Python name), got {target!r}"
        )
    is_file = module_part.endswith(".py") or "/" in module_part or os.sep in module_part
    return module_part, name, is_file


def check_target(target: str) -> None:
    """What can be said of ``target`` without running any of its code.

    Raises:
      TargetError: a malformed TARGET, or a file that does not exist.
    """
    module_part, _, is_file = _split(target)
    if is_file:
        path = pathlib.Path(module_part)
        if path.is_dir():
            raise TargetError(f"{module_part} is a folder; TARGET names a .py file")
        if not path.is_file():
            raise TargetError(f"no such file: {module_part}")
    elif not all(part.isidentifier() for part in module_part.split(".")):
        raise TargetError(
            f"{module_part!r} is neither a .py file nor a dotted module name"
        )


def _importable(folder: str) -> None:
    folder = os.path.abspath(folder)
    if folder not in (os.path.abspath(p or ".") for p in sys.path):
        sys.path.insert(0, folder)


def _module(module_part: str, is_file: bool) -> Any:
    _importable(os.getcwd())
    if not is_file:
        return importlib.import_module(module_part)
    path = pathlib.Path(module_part)
    _importable(str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise TargetError(f"cannot import {module_part}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def load_target(target: str) -> list[Any]:
    """Loads ``target`` as cases.

    NAME may be a HybridCase or MigrationCase, a list/tuple of them (empty: the
    caller reports that nothing ran), or a zero-argument callable returning either.
    An exception the module or the callable raises is a TargetError naming it; a
    ``SystemExit`` or other
    ``BaseException`` propagates (the caller reports user code ending the run).

    Raises:
      TargetError: with a one-line reason.
    """
    from hybridcheck.describe.hybrid_case import HybridCase
    from hybridcheck.describe.migration_case import MigrationCase
    from hybridcheck.describe.usercode import user_site

    case_types = (HybridCase, MigrationCase)
    check_target(target)
    module_part, name, is_file = _split(target)
    try:
        module = _module(module_part, is_file)
    except TargetError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's module failed to import
        site = user_site(exc)
        raise TargetError(
            f"importing {module_part} failed: {type(exc).__name__}: {exc}"
            + (f" (at {site})" if site else "")
        ) from exc
    if not hasattr(module, name):
        raise TargetError(f"{module_part} has no attribute {name!r}")
    obj = getattr(module, name)
    if callable(obj) and not isinstance(obj, case_types):
        try:
            obj = obj()
        except Exception as exc:  # noqa: BLE001
            site = user_site(exc)
            raise TargetError(
                f"calling {name}() failed: {type(exc).__name__}: {exc}"
                + (f" (at {site})" if site else "")
            ) from exc
    cases = [obj] if isinstance(obj, case_types) else obj
    if not isinstance(cases, list | tuple) or not all(
        isinstance(c, case_types) for c in cases
    ):
        raise TargetError(
            f"{target} must be a HybridCase or MigrationCase, a non-empty list of "
            f"them, or a callable returning one; got {type(obj).__name__}"
        )
    return list(cases)
