"""Make the 2022 OD API (``object_detection`` 2.8) work on TensorFlow 2.20.

Nothing under site-packages is edited. Importing :mod:`tfod` calls
:func:`install`, which only puts an import hook on ``sys.meta_path`` (no
TensorFlow import, so ``tfod --help`` stays fast). The hook acts when the
OD API, or one of the few third-party modules it trips over, is imported:

* ``object_detection.protos.*_pb2`` are rebuilt from the serialized file
  descriptors embedded in them (see :class:`_ProtoLoader` for why).
* every other shim is a *patch* bound to one module name. It runs right
  before or after that module executes, checks that the thing it replaces is
  really missing, and records itself in :data:`ACTIVE` when it applies.

Each patch names the upstream break it covers. ``tfod doctor`` prints
:func:`report`; ``docs/COMPAT.md`` describes every shim and what remains.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
import types
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger(__name__)

#: Shim names that applied in this process, with a short reason each.
ACTIVE: dict[str, str] = {}


@dataclass(frozen=True)
class Shim:
    """One workaround: which module triggers it, what upstream break it covers."""

    name: str
    modules: tuple[str, ...]  # the modules whose import triggers the shim
    breaks: str  # the upstream break, with the file and line it shows in
    before: Callable[[], object] | None = None  # context manager factory around exec
    after: Callable[[types.ModuleType], bool] | None = None  # returns True if applied


SHIMS: dict[str, Shim] = {}
_BY_MODULE: dict[str, list[Shim]] = {}


def _register(shim: Shim) -> Shim:
    SHIMS[shim.name] = shim
    for module in shim.modules:
        _BY_MODULE.setdefault(module, []).append(shim)
    return shim


def _mark(name: str, detail: str) -> None:
    ACTIVE[name] = detail
    log.debug("compat shim %s applied: %s", name, detail)


# --------------------------------------------------------------------------- #
# Environment: Keras 2 (tf_keras) for tf.keras. Must be set before TensorFlow
# is imported; TF 2.16+ otherwise gives Keras 3, which the OD API cannot use.
# --------------------------------------------------------------------------- #
def _set_legacy_keras() -> None:
    if os.environ.get("TF_USE_LEGACY_KERAS") is None:
        if "tensorflow" in sys.modules:
            log.warning("TensorFlow was imported before tfod: set TF_USE_LEGACY_KERAS=1 "
                        "in the environment so tf.keras is tf_keras (Keras 2)")
        os.environ["TF_USE_LEGACY_KERAS"] = "1"


# --------------------------------------------------------------------------- #
# Protos
# --------------------------------------------------------------------------- #
def _is_old_generated(source: str) -> bool:
    """True for protoc < 3.20 output (descriptors built field by field)."""
    return "_descriptor.FileDescriptor(" in source and "serialized_pb=" in source \
        and "AddSerializedFile" not in source


def _serialized_descriptor(tree: ast.Module, filename: str) -> bytes:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "FileDescriptor":
            for kw in node.keywords:
                if kw.arg == "serialized_pb":
                    return ast.literal_eval(kw.value)
    raise ImportError(f"{filename}: no serialized_pb found in FileDescriptor(...); "
                      "this does not look like protoc output")


class _ProtoLoader(importlib.abc.Loader):
    """Build an old generated ``*_pb2`` module the way current protoc does.

    Break: the sdist's ``*_pb2.py`` were made by protoc 3.x and create
    descriptors directly, which the default upb (and C++) protobuf backends
    refuse ("Descriptors cannot be created directly"). The usual advice,
    ``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python``, is slow and breaks
    ``map<>`` fields.

    Why an import hook and not regenerated files: every old module embeds its
    complete ``FileDescriptorProto`` (``serialized_pb=b'...'``), which is exactly
    what modern generated code feeds to ``AddSerializedFile``. Reading it from
    the installed file needs no protoc, no ``.proto`` sources (the sdist has
    none), no build step and no copy of upstream files in this repository, and
    it always matches the installed package. Modules already in the modern
    form are left alone.
    """

    def __init__(self, original: importlib.abc.Loader, fullname: str):
        self.original = original
        self.fullname = fullname

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        source = self.original.get_source(self.fullname)
        if source is None or not _is_old_generated(source):
            self.original.exec_module(module)
            return
        filename = getattr(module, "__file__", self.fullname)
        tree = ast.parse(source, filename)
        serialized = _serialized_descriptor(tree, filename)
        # Dependencies first: their descriptors must be in the pool before ours.
        imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        exec(compile(ast.Module(body=imports, type_ignores=[]), filename, "exec"),
             module.__dict__)
        from google.protobuf import descriptor_pool
        from google.protobuf.internal import builder

        module.DESCRIPTOR = descriptor_pool.Default().AddSerializedFile(serialized)
        builder.BuildMessageAndEnumDescriptors(module.DESCRIPTOR, module.__dict__)
        builder.BuildTopDescriptorsAndMessages(module.DESCRIPTOR, self.fullname,
                                               module.__dict__)
        ACTIVE.setdefault("protos", "object_detection.protos rebuilt from embedded "
                          "descriptors")


# --------------------------------------------------------------------------- #
# The import hook
# --------------------------------------------------------------------------- #
class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, original: importlib.abc.Loader, shims: list[Shim]):
        self.original = original
        self.shims = shims

    def create_module(self, spec):
        return self.original.create_module(spec)

    def exec_module(self, module):
        with contextlib.ExitStack() as stack:
            for shim in self.shims:
                if shim.before is not None:
                    stack.enter_context(shim.before())
            self.original.exec_module(module)
        for shim in self.shims:
            if shim.after is not None:
                _run_after(shim, module)

    def __getattr__(self, name):  # get_source, get_code, is_package ...
        return getattr(self.original, name)


def _run_after(shim: Shim, module: types.ModuleType) -> None:
    if shim.after(module):
        _mark(shim.name, shim.breaks)


def _is_proto(fullname: str) -> bool:
    return fullname.startswith("object_detection.protos.") and fullname.endswith("_pb2")


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        is_proto = _is_proto(fullname)
        if not is_proto and fullname not in _BY_MODULE:
            return None
        spec = None
        for finder in sys.meta_path:  # the next finder that knows the module
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        if spec is None or spec.loader is None:
            return None
        if is_proto:
            spec.loader = _ProtoLoader(spec.loader, fullname)
        else:
            spec.loader = _PatchingLoader(spec.loader, _BY_MODULE[fullname])
        return spec


_FINDER = _Finder()


def install() -> None:
    """Put the compat hook in place; cheap, idempotent, imports no TensorFlow.

    Example:
        >>> import tfod.compat
        >>> tfod.compat.install()
        >>> from object_detection.protos import pipeline_pb2
    """
    _set_legacy_keras()
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    # Modules imported before tfod get their after-patches now.
    for name, shims in _BY_MODULE.items():
        module = sys.modules.get(name)
        if module is not None:
            for shim in shims:
                if shim.after is not None:
                    _run_after(shim, module)


def report() -> dict[str, str]:
    """Every known shim and whether it applied in this process."""
    out = {"protos": ACTIVE.get("protos", "not applied (no old *_pb2 imported yet)")}
    for name in SHIMS:
        out[name] = "active" if name in ACTIVE else "inactive"
    return out


# --------------------------------------------------------------------------- #
# Helpers for patches
# --------------------------------------------------------------------------- #
class ModuleProxy(types.ModuleType):
    """A stand-in for a module global that adds a few missing names.

    Used so that a fix is visible only to the OD API module that needs it,
    instead of adding removed names back into numpy or TensorFlow for everyone.
    """

    def __init__(self, wrapped: types.ModuleType, **extra):
        super().__init__(wrapped.__name__)
        self.__dict__["_wrapped"] = wrapped
        self.__dict__.update(extra)

    def __getattr__(self, name):
        return getattr(self.__dict__["_wrapped"], name)


def _proxy_global(module: types.ModuleType, global_name: str,
                  replace: tuple[str, ...] = (), **extra) -> bool:
    """Replace ``module.<global_name>`` by a proxy adding only the missing names.

    Names in ``replace`` exist but changed behaviour (numpy 2.4: binary
    ``fromstring`` raises); the proxy overrides them too.
    """
    target = getattr(module, global_name, None)
    if target is None:
        return False
    if isinstance(target, ModuleProxy):
        target = target.__dict__["_wrapped"]
    missing = {}
    for key, value in extra.items():
        try:
            getattr(target, key)
        except (AttributeError, ValueError):
            missing[key] = value
        else:
            if key in replace:
                missing[key] = value
    if not missing:
        return False
    setattr(module, global_name, ModuleProxy(target, **missing))
    return True


# the shims register themselves (_register) as tfod.compat.shims is imported
importlib.import_module("tfod.compat.shims")
