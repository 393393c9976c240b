"""The static scan of answer cells: which forbidden names an answer (and the helpers it uses) mentions.

Grader side (trusted). It parses the learner's source and never runs it.
"""
from __future__ import annotations

import ast

__all__ = ["parse", "forbidden_uses", "defined_and_used", "with_helpers"]


def parse(source: str):
    try:
        return ast.parse(source)
    except SyntaxError:
        pass
    try:  # cells may hold IPython syntax (magics); translate it to Python first
        from IPython.core.inputtransformer2 import TransformerManager

        return ast.parse(TransformerManager().transform_cell(source))
    except Exception:
        return None


def forbidden_uses(source: str, names: frozenset, own: frozenset = frozenset()) -> list[str]:
    """Identifiers from ``names`` (and any use of ``coursekit``'s reference) that a cell mentions.

    Names, attributes, imported modules/names and string constants are scanned: a static check that
    catches the honest shortcut (``F.batch_norm``), not determined obfuscation. Bare names in
    ``own`` (functions the learner defined, e.g. their own ``layer_norm`` called from
    ``group_norm``) are allowed.
    """
    tree = parse(source)
    if tree is None:
        return []
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in names and node.id not in own:
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            if node.attr in names:
                found.add(node.attr)
            if node.attr == "reference":
                found.add("coursekit.reference")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names]
            if isinstance(node, ast.ImportFrom) and node.module:
                mods.append(node.module)
            for m in mods:
                found.update(set(m.split(".")) & names)
                if m.split(".")[0] == "coursekit":
                    found.add(m)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
            found.add(node.value)
    return sorted(found)


def defined_and_used(source: str) -> tuple[set[str], set[str]]:
    """(top-level names a cell defines, every name it mentions)."""
    tree = parse(source)
    if tree is None:
        return set(), set()
    defined = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return defined, {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


def with_helpers(answers: dict[str, str], cid: str) -> list[str]:
    """The answer cell ``cid`` and every other answer cell it uses names from (transitively)."""
    info = {c: defined_and_used(src) for c, src in answers.items()}
    seen, todo = {cid}, [cid]
    while todo:
        used = info[todo.pop()][1]
        for other, (defined, _) in info.items():
            if other not in seen and defined & used:
                seen.add(other)
                todo.append(other)
    return [answers[c] for c in seen]

