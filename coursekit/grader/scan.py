"""The static scan of answer cells: which forbidden names an answer (and the helpers it uses) mentions.

Grader side (trusted). It parses the learner's source and never runs it.
"""
from __future__ import annotations

import ast

__all__ = ["parse", "forbidden_uses", "defined_and_used", "with_helpers"]


_MAGIC_CALLS = ("run_cell_magic", "run_line_magic")


def parse(source: str):
    """The AST of a cell, IPython syntax included: the bodies of magics (``%%capture``, ``%time``,
    ...) are parsed too and appended, so code wrapped in a magic is scanned like any other."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        tree = None
    except (ValueError, RecursionError, MemoryError):
        return None
    if tree is None:
        try:  # cells may hold IPython syntax (magics); translate it to Python first
            from IPython.core.inputtransformer2 import TransformerManager

            tree = ast.parse(TransformerManager().transform_cell(source))
        except Exception:
            return None
    bodies = []
    for node in ast.walk(tree):
        # get_ipython().run_cell_magic('capture', '', BODY) / run_line_magic('time', LINE)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _MAGIC_CALLS
                and node.args and isinstance(node.args[-1], ast.Constant) and isinstance(node.args[-1].value, str)):
            body = parse(node.args[-1].value)
            if body is not None:
                bodies.append(body)
    for body in bodies:
        tree.body.extend(body.body)
    return tree


# A star import from torch brings every forbidden function in under its bare name.
_STAR_SOURCES = ("torch", "coursekit")


def forbidden_uses(source: str, names: frozenset, own: frozenset = frozenset()) -> list[str]:
    """Identifiers from ``names`` (and any use of ``coursekit``'s reference) that a cell mentions.

    Names, attributes, imported modules/names, string constants and the bodies of magics are
    scanned: a static check that catches the honest shortcut (``F.batch_norm``), not determined
    obfuscation. Bare names in ``own`` (functions the learner defined with ``def``/``class``, e.g.
    their own ``layer_norm`` called from ``group_norm``) are allowed; ``from torch... import *`` is
    reported as such when ``names`` is not empty (it binds the library's functions to bare names).
    Any identifier or string starting with ``_coursekit`` (the grader's own code in the kernel, which
    an answer could otherwise redefine to forge its results) is reported for every task.
    """
    tree = parse(source)
    if tree is None:
        return []
    found: set[str] = set()
    for node in ast.walk(tree):
        ident = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else (
            node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else "")
        if ident.lower().startswith("_coursekit"):  # the grader's code in the kernel (in_kernel.py): hands off
            found.add("the grader's _coursekit internals")
        if isinstance(node, ast.Name) and node.id in names and node.id not in own:
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            if node.attr in names:
                found.add(node.attr)
            if node.attr == "reference":
                found.add("coursekit.reference")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names if a.name != "*"]
            if isinstance(node, ast.ImportFrom) and node.module:
                mods.append(node.module)
                if any(a.name == "*" for a in node.names) and node.module.split(".")[0] in _STAR_SOURCES and (
                        names or node.module.startswith("coursekit")):
                    found.add(f"from {node.module} import *")
            for m in mods:
                found.update(set(m.split(".")) & names)
                if m.split(".")[0] == "coursekit":
                    found.add(m)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names - own:
            # a string naming one's own function (``__all__`` of pasted code) is not the library's
            found.add(node.value)
    return sorted(found)


def defined_and_used(source: str) -> tuple[set[str], set[str]]:
    """(names a cell defines with a top-level ``def``/``class``, every name it mentions).

    Only real definitions count as the learner's own: ``batch_norm = batch_norm`` after a star
    import, or ``layer_norm = F.layer_norm``, does not make the library's function theirs.
    """
    tree = parse(source)
    if tree is None:
        return set(), set()
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    return defined, {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


def _bound(source: str) -> set[str]:
    """Every name a cell binds at top level (definitions, assignments, imports): who may lend names."""
    tree = parse(source)
    if tree is None:
        return set()
    out, todo = set(), list(tree.body)
    while todo:  # module level only: a function's local variables lend nothing to other cells
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            out.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            out |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name != "*"}
        todo.extend(ast.iter_child_nodes(node))
    return out


def with_helpers(answers: dict[str, str], cid: str) -> list[str]:
    """The answer cell ``cid``, every answer cell that defines the task's own name (``answer-<name>``:
    a learner may write ``recalibrate`` in another task's cell), and every answer cell these use
    names from, transitively."""
    info = {c: (_bound(src), defined_and_used(src)[1]) for c, src in answers.items()}
    task = cid[len("answer-"):] if cid.startswith("answer-") else None
    seeds = {cid} | {c for c, (bound, _) in info.items() if task and task in bound}
    seen, todo = set(seeds), [c for c in seeds if c in info]
    while todo:
        used = info[todo.pop()][1]
        for other, (bound, _) in info.items():
            if other not in seen and bound & used:
                seen.add(other)
                todo.append(other)
    return [answers[c] for c in sorted(seen) if c in answers]
