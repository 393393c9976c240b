"""The source text the learner's kernel receives for one task: a body of ``coursekit.kernel_side`` made self-contained.

Part of :mod:`coursekit.tasks` (trusted side). :func:`kernel_body` reads the module that defines a
body, keeps the body and what it uses (functions, constants, imports; names imported from another
``kernel_side`` module are followed there), and wraps it all in one function so that the only
name it leaves in the kernel is ``_coursekit_body`` (what ``in_kernel._coursekit_probe`` and the
check call): a learner's helper named like one of ours is never overwritten. The learner's object
is looked up by its name when a case runs, as the learner's own code would. (Indenting the source
would change the text of a multi-line string literal: kernel-side code keeps them to docstrings.)

Example::

    >>> from coursekit.kernel_side import lesson02
    >>> source = kernel_body(lesson02.run_channel_stats, "channel_stats")
    >>> "def _coursekit_body(case, tensors, arrays, recording):" in source
    True
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import textwrap
from collections.abc import Callable

__all__ = ["kernel_body"]

_KERNEL_SIDE = "coursekit.kernel_side."
_NOT_SENT = ("coursekit.kernel_side.outputs",)  # the declaration is read on the trusted side only


@functools.cache
def _module_tree(modname: str) -> tuple[list[str], dict[str, ast.stmt]]:
    """The lines of a kernel-side module and its top-level definitions by name."""
    source = inspect.getsource(importlib.import_module(modname))
    definitions: dict[str, ast.stmt] = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            definitions[node.name] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        definitions[name.id] = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                definitions[(alias.asname or alias.name).split(".")[0]] = node
    return source.splitlines(), definitions


def _segment(lines: list[str], node: ast.stmt, only: str | None = None) -> str:
    """A definition's source without its decorators; an import reduced to the one name used."""
    if isinstance(node, ast.ImportFrom):
        alias = next(a for a in node.names if (a.asname or a.name) == only)
        return f"from {node.module} import {alias.name}" + (f" as {alias.asname}" if alias.asname else "")
    return "\n".join(lines[node.lineno - 1:node.end_lineno])


def _collect(modname: str, name: str, seen: dict[tuple[str, str], str]) -> None:
    """Add ``name`` of ``modname`` and everything it uses to ``seen`` (dependencies first)."""
    if (modname, name) in seen:
        return
    lines, definitions = _module_tree(modname)
    node = definitions.get(name)
    if node is None:  # a builtin, a parameter, a local, or a name the kernel provides
        return
    if isinstance(node, ast.ImportFrom) and (node.module in _NOT_SENT or node.module == "__future__"):
        return
    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(_KERNEL_SIDE):  # followed there
        _collect(node.module, next(a.name for a in node.names if (a.asname or a.name) == name), seen)
        return
    seen[(modname, name)] = ""  # placeholder: a recursive definition is not followed twice
    if not isinstance(node, (ast.Import, ast.ImportFrom)):
        used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        for other in sorted(used - {name}):
            _collect(modname, other, seen)
    del seen[(modname, name)]
    seen[(modname, name)] = _segment(lines, node, name)


def kernel_body(body: Callable, learner_name: str) -> str:
    """Self-contained source defining ``_coursekit_body(case, tensors, arrays, recording)``, which calls ``body``
    (a ``run_<task>`` of ``coursekit.kernel_side``) with the learner's ``learner_name``."""
    if _module_tree(body.__module__)[1].get(body.__name__) is None or body.__qualname__ != body.__name__:
        raise ValueError(f"expected a module-level function as a body (got {body.__qualname__!r})")
    seen: dict[tuple[str, str], str] = {}
    _collect(body.__module__, body.__name__, seen)
    if any(name == learner_name for _, name in seen):
        raise ValueError(f"expected kernel-side names other than the learner's (got {learner_name!r} defined)")
    parts = "\n\n".join(text for text in seen.values() if text)
    return (
        "def _coursekit_make_body():\n"
        + textwrap.indent(parts, "    ")
        + "\n\n    def _coursekit_body(case, tensors, arrays, recording):\n"
        + f"        return {body.__name__}({learner_name}, case, tensors, arrays, recording)\n\n"
        + "    return _coursekit_body\n\n\n"
        + "_coursekit_body = _coursekit_make_body()\n"
        + "del _coursekit_make_body\n"
    )
