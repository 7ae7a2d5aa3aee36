"""griffe extension: ``#:`` attribute comments as docstrings, and the docstrings' Sphinx roles
(``:func:`x```, ``:class:`~a.b.C```) as Markdown.

The docstrings are read by ``help()`` as much as by this site, so they keep the short roles; here
a role becomes a cross-reference when its target is on a reference page, else inline code."""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|obj):`(~?)([\w.]+)`")

#: Modules rendered whole on a reference page, and single objects rendered elsewhere.
RENDERED_MODULES = (
    "addressing", "numerics", "interface", "controllers", "cell", "compat", "sparse.addressing", "sparse.knn",
)  # fmt: skip
RENDERED = {
    "memfn._memory.Memory", "memfn._dnc.dnc", "memfn._dnc.DNCState", "memfn.sparse._sam.sam",
    "memfn.sparse._sam.SAMState", "memfn.sparse._sam.usage", "memfn.sparse._sdnc.sdnc", "memfn.sparse._sdnc.SDNCState",
    "memfn.nn._dnc.DNC", "memfn.nn._network.MemoryNetwork", "memfn.nn._views.MemoryView",
    "memfn.nn._hidden.clone", "memfn.nn._hidden.detach", "memfn.nn._sparse.SAM", "memfn.nn._sparse.SDNC",
    "memfn.tasks.infer.load", "memfn.tasks.infer.load_step", "memfn.tasks.infer.save_step",
    "memfn.tasks.infer.export_step", "memfn.tasks.infer.run_inference", "memfn.tasks.train", "memfn.tasks.infer",
}  # fmt: skip


def _rendered(path: str) -> bool:
    return (
        path in RENDERED
        or any(path == f"memfn.{m}" or path.startswith(f"memfn.{m}.") for m in RENDERED_MODULES)
        or any(path.startswith(p + ".") and p.rsplit(".", 1)[-1][:1].isupper() for p in RENDERED)
    )


class RolesToMarkdown(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if pkg.path == "memfn":
            self._walk(pkg, loader, set())

    def _walk(self, obj: griffe.Object, loader: griffe.GriffeLoader, seen: set[str]) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        if obj.docstring is None and obj.is_attribute:
            self._comment_docstring(obj)
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(lambda m: self._link(m, obj, loader), obj.docstring.value)
        for member in obj.members.values():
            if not member.is_alias:
                self._walk(member, loader, seen)

    @staticmethod
    def _comment_docstring(obj: griffe.Object) -> None:
        """Sphinx's ``#:`` comments above a module or class attribute become its docstring."""
        lines, i, text = obj.module.lines, (obj.lineno or 1) - 2, []
        while 0 <= i < len(lines) and lines[i].strip().startswith("#:"):
            text.insert(0, lines[i].strip()[2:].strip())
            i -= 1
        if text:
            obj.docstring = griffe.Docstring("\n".join(text), lineno=i + 2, parent=obj)

    def _link(self, match: re.Match, obj: griffe.Object, loader: griffe.GriffeLoader) -> str:
        short, name = match.groups()
        title = f"`{name.rsplit('.', 1)[-1] if short else name}`"
        scopes = [obj.path, obj.parent.path if obj.parent else "", obj.module.path, ""]
        for scope in scopes:
            path = f"{scope}.{name}" if scope else name
            try:
                target = loader.modules_collection[path]
            except (KeyError, ValueError):
                continue
            canonical = target.final_target.path if target.is_alias else target.path
            return f"[{title}][{canonical}]" if _rendered(canonical) else title
        return title
