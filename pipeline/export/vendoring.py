"""The code an exported bundle needs, vendored as its ``scripts`` package (the model zoo's convention).

A bundle's configs name this project's code with dotted paths (``"_target_": "pipeline.networks.UNet"``,
``"$pipeline.x.f(...)"``). :func:`plan_vendoring` finds, from the source files alone (``ast``, nothing is
imported), every module those names need:

- each dotted name is resolved to the module that *defines* it: ``pipeline.predict.ResilientDataset``, which
  ``pipeline/predict/__init__.py`` only re-exports, becomes ``pipeline.predict.engine.ResilientDataset``, so that
  a package ``__init__`` that imports half the project (``pipeline.predict`` imports the ``predict`` command)
  is not needed;
- each vendored module's ``import pipeline.x`` / ``from pipeline.x import y`` (at any depth: a lazy import inside a
  function is needed when that function runs) is resolved the same way and followed, transitively;
- the packages above a vendored module get an ``__init__.py`` of their own: a stub, unless a name defined in the
  original ``__init__`` is used (then the original is vendored, and its imports are followed).

:func:`vendor_source` rewrites one module's source: its imports of the project point at the defining modules
under ``scripts.`` (only the import statements are rewritten; the rest of the file is kept byte for byte), and
the remaining mentions ``pipeline.<name>`` (docstrings, comments, module names in strings) read
``scripts.<name>``. :func:`rewrite_references` does the same for config values.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT_PACKAGE = "pipeline"
VENDOR_PACKAGE = "scripts"
# a dotted name of the project in a config value or a source file: pipeline.x.y (not "pipeline" alone)
_DOTTED = re.compile(r"(?<![\w.])" + PROJECT_PACKAGE + r"(?:\.[A-Za-z_]\w*)+")
# the same in free text, where a trailing full stop ends a sentence: it needs a name after the dot
_MENTION = re.compile(r"(?<![\w.])" + PROJECT_PACKAGE + r"\.(?=[A-Za-z_])")
STUB_DOCSTRING = ('"""The ``{name}`` package, vendored by ``python -m pipeline export``: only the modules that\n'
                  'the bundle\'s configs need are here (the original ``__init__`` is not)."""\n')


class VendoringError(ValueError):
    """A config names code of the project that cannot be found, or a module's imports cannot be followed."""


@dataclass
class VendoringPlan:
    """What :func:`plan_vendoring` found.

    Attributes:
        modules: project module name -> its source file, every module to vendor (packages included).
        stubs: the packages vendored as a stub ``__init__.py`` (their original is not needed).
        references: each dotted name found in the configs -> the name it becomes (under ``scripts.``).
        third_party: top-level names of the packages outside the standard library that the vendored modules
            import, each with the modules importing it.
    """

    modules: dict[str, Path] = field(default_factory=dict)
    stubs: set[str] = field(default_factory=set)
    references: dict[str, str] = field(default_factory=dict)
    third_party: dict[str, set[str]] = field(default_factory=dict)


class ProjectSource:
    """The project's package read as source: module files, their syntax trees and what their names resolve to.

    Args:
        root: the folder that holds the package folder (``pipeline/``).
        package: the package name.
    """

    def __init__(self, root: Path, package: str = PROJECT_PACKAGE):
        self.root = Path(root)
        self.package = package
        self._trees: dict[str, ast.Module] = {}

    def module_file(self, name: str) -> Path | None:
        """The source file of module ``name`` (``a/b.py`` or ``a/b/__init__.py``), ``None`` if it is not one."""
        parts = name.split(".")
        if parts[0] != self.package:
            return None
        base = self.root.joinpath(*parts)
        if (base / "__init__.py").is_file():
            return base / "__init__.py"
        if base.with_suffix(".py").is_file():
            return base.with_suffix(".py")
        return None

    def is_package(self, name: str) -> bool:
        """True when module ``name`` is a package (a folder with ``__init__.py``)."""
        path = self.module_file(name)
        return path is not None and path.name == "__init__.py"

    def tree(self, name: str) -> ast.Module:
        """The syntax tree of module ``name``.

        Raises:
            VendoringError: no such module, or its source does not parse.
        """
        if name not in self._trees:
            path = self.module_file(name)
            if path is None:
                raise VendoringError(f"{name}: no such module of the {self.package!r} package under {self.root}")
            try:
                self._trees[name] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            except SyntaxError as err:
                raise VendoringError(f"{path}: cannot be parsed ({err})") from err
        return self._trees[name]

    def absolute(self, module: str, node: ast.ImportFrom) -> str | None:
        """The absolute module name of a ``from ... import`` in ``module`` (relative imports resolved)."""
        if not node.level:
            return node.module
        package = module if self.is_package(module) else module.rpartition(".")[0]
        parts = package.split(".")
        if node.level > 1:
            parts = parts[: len(parts) - node.level + 1]
        return ".".join(parts + ([node.module] if node.module else []))

    def defines(self, module: str, name: str) -> bool:
        """True when ``name`` is bound at the top level of ``module`` by anything but an import."""
        for node in _top_level(self.tree(module).body):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
                return True
            if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(target)):
                        return True
        return False

    def reexport(self, module: str, name: str) -> tuple[str, str] | None:
        """Where ``module`` imports ``name`` from, when a top-level ``from X import ...`` binds it:
        ``(X, name in X)``; ``None`` otherwise."""
        for node in _top_level(self.tree(module).body):
            if isinstance(node, ast.ImportFrom):
                source = self.absolute(module, node)
                for alias in node.names:
                    if (alias.asname or alias.name) == name and source:
                        return source, alias.name
        return None

    def resolve(self, module: str, name: str, _seen: frozenset = frozenset()) -> tuple[str, str | None]:
        """Where ``module``'s attribute ``name`` really lives: ``(module, None)`` when it is a submodule, else
        ``(defining module, name there)``, following re-exports of the project's own modules.

        Raises:
            VendoringError: a re-export cycle, or a name the module neither defines nor imports.
        """
        if self.module_file(f"{module}.{name}") is not None:
            return f"{module}.{name}", None
        if (module, name) in _seen:
            raise VendoringError(f"{module}.{name}: the re-exports go round in a cycle")
        if self.defines(module, name):
            return module, name
        source = self.reexport(module, name)
        if source is not None and source[0].split(".")[0] == self.package:
            return self.resolve(source[0], source[1], _seen | {(module, name)})
        if source is not None:  # a third-party name re-exported by the module: the module itself is needed
            return module, name
        if _has_module_getattr(self.tree(module)):
            return module, name
        raise VendoringError(f"{module} has no name {name!r} (neither defined nor imported there)")

    def resolve_dotted(self, dotted: str) -> tuple[str, list[str]]:
        """A dotted name ``pipeline.a.B.c`` as ``(defining module, attribute chain)``.

        Raises:
            VendoringError: no module of the project starts the name, or its first attribute cannot be found.
        """
        parts = dotted.split(".")
        for cut in range(len(parts), 0, -1):
            module = ".".join(parts[:cut])
            if self.module_file(module) is not None:
                break
        else:
            raise VendoringError(f"{dotted}: not a module of the {self.package!r} package")
        rest = parts[cut:]
        while rest:
            target, attr = self.resolve(module, rest[0])
            if attr is None:
                module, rest = target, rest[1:]
                continue
            return target, [attr, *rest[1:]]
        return module, []


def _top_level(body: list[ast.stmt]) -> Iterable[ast.stmt]:
    """The statements of a module body, with those inside top-level ``if``/``try`` blocks."""
    for node in body:
        yield node
        if isinstance(node, ast.If):
            yield from _top_level(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            yield from _top_level(node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body])


def _has_module_getattr(tree: ast.Module) -> bool:
    return any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in tree.body)


def _vendored(name: str) -> str:
    """``pipeline.a.b`` -> ``scripts.a.b``."""
    return VENDOR_PACKAGE + name[len(PROJECT_PACKAGE):]


def _is_project(name: str | None) -> bool:
    return bool(name) and (name == PROJECT_PACKAGE or name.startswith(PROJECT_PACKAGE + "."))


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def config_references(config: Any) -> set[str]:
    """Every dotted name of the project (``pipeline.x.y``) in a config's strings (``_target_`` values and
    ``$`` expressions; any string, since a ``$`` expression may hide one anywhere).

    Args:
        config: a parsed config (dicts, lists, strings, numbers).

    Returns:
        The dotted names found.
    """
    found: set[str] = set()
    if isinstance(config, str):
        found.update(m.group(0) for m in _DOTTED.finditer(config))
    elif isinstance(config, Mapping):
        for key, value in config.items():
            found |= config_references(key) | config_references(value)
    elif isinstance(config, (list, tuple)):
        for value in config:
            found |= config_references(value)
    return found


def rewrite_references(config: Any, references: Mapping[str, str]) -> Any:
    """A copy of ``config`` with each project name of ``references`` (from :func:`plan_vendoring`) replaced by its
    vendored name, in every string.

    Raises:
        VendoringError: a project name that ``references`` does not map (the plan was made for other configs).
    """
    if isinstance(config, str):
        def replace(match: re.Match) -> str:
            if match.group(0) not in references:
                raise VendoringError(f"{match.group(0)}: a project name the vendoring plan does not cover")
            return references[match.group(0)]
        return _DOTTED.sub(replace, config)
    if isinstance(config, Mapping):
        return {rewrite_references(k, references): rewrite_references(v, references) for k, v in config.items()}
    if isinstance(config, list):
        return [rewrite_references(v, references) for v in config]
    return config


def _string_module_names(tree: ast.Module, source: ProjectSource) -> set[str]:
    """Module names of the project held in string constants (``importlib.import_module("pipeline.x")``)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and _DOTTED.fullmatch(node.value):
            if source.module_file(node.value) is not None:
                names.add(node.value)
    return names


def _import_targets(source: ProjectSource, module: str, node: ast.stmt) -> list[tuple[str, str | None, str | None]]:
    """What an import statement of the project binds, resolved: ``(defining module, name there or None for a
    module, name bound)`` per alias; empty for other imports."""
    if isinstance(node, ast.Import):
        return [(alias.name, None, alias.asname) for alias in node.names if _is_project(alias.name)]
    if isinstance(node, ast.ImportFrom):
        base = source.absolute(module, node)
        if not _is_project(base):
            return []
        result = []
        for alias in node.names:
            if alias.name == "*":
                raise VendoringError(f"{module}: 'from {base} import *' cannot be vendored; import the names")
            target, attr = source.resolve(base, alias.name)
            result.append((target, attr, alias.asname or alias.name))
        return result
    return []


def module_dependencies(source: ProjectSource, module: str) -> tuple[set[str], set[str]]:
    """The project modules that ``module`` needs, and the top-level names of the other packages it imports.

    Every import statement counts, at any depth (also those inside functions and ``try`` blocks).

    Returns:
        ``(project modules, third-party top-level names)``; the standard library is left out.
    """
    tree = source.tree(module)
    needed, third_party = set(), set()
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        needed.update(target for target, _, _ in _import_targets(source, module, node))
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            names = [node.module] if node.module and not node.level else []
        for name in names:
            top = name.split(".")[0]
            if top not in sys.stdlib_module_names and top != "__future__" and not _is_project(top):
                third_party.add(top)
    needed |= _string_module_names(tree, source)
    return needed, third_party


def plan_vendoring(configs: Iterable[Any], root: Path) -> VendoringPlan:
    """The modules to vendor for ``configs`` (see the module docstring) and what each config name becomes.

    Args:
        configs: the parsed configs of the bundle.
        root: the folder holding the ``pipeline`` package.

    Returns:
        The plan (:class:`VendoringPlan`).

    Raises:
        VendoringError: a config names code that does not exist, or an import cannot be resolved.
    """
    source = ProjectSource(root)
    plan = VendoringPlan()
    pending: list[str] = []
    names = set()
    for config in configs:
        names |= config_references(config)
    for dotted in sorted(names):
        module, chain = source.resolve_dotted(dotted)
        plan.references[dotted] = ".".join([_vendored(module), *chain])
        pending.append(module)
    full: set[str] = set()  # packages whose own __init__ is needed
    seen: set[str] = set()
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        if source.is_package(module):
            full.add(module)
        needed, third_party = module_dependencies(source, module)
        for name in third_party:
            plan.third_party.setdefault(name, set()).add(module)
        pending.extend(sorted(needed - seen))
    for module in sorted(seen):
        plan.modules[module] = source.module_file(module)
        for parent in _parents(module):
            if parent not in seen:
                plan.modules[parent] = source.module_file(parent)
                plan.stubs.add(parent)
    plan.stubs -= full
    if PROJECT_PACKAGE not in plan.modules:
        plan.modules[PROJECT_PACKAGE] = source.module_file(PROJECT_PACKAGE)
        plan.stubs.add(PROJECT_PACKAGE)
    return plan


def _line_offsets(text: str) -> list[int]:
    offsets, position = [0], 0
    for line in text.splitlines(keepends=True):
        position += len(line)
        offsets.append(position)
    return offsets


def _rewritten_import(source: ProjectSource, module: str, node: ast.stmt) -> list[str] | None:
    """The import statements that replace ``node`` (one per defining module), or ``None`` to keep it."""
    targets = _import_targets(source, module, node)
    if not targets:
        return None
    if isinstance(node, ast.Import):
        names = [(_vendored(a.name) if _is_project(a.name) else a.name) + (f" as {a.asname}" if a.asname else "")
                 for a in node.names]
        return ["import " + ", ".join(names)]
    groups: dict[str, list[str]] = {}
    for target, attr, bound in targets:
        if attr is None:  # a submodule: from its package
            package, _, name = target.rpartition(".")
            groups.setdefault(_vendored(package), []).append(name if name == bound else f"{name} as {bound}")
        else:
            groups.setdefault(_vendored(target), []).append(attr if attr == bound else f"{attr} as {bound}")
    return [f"from {where} import {', '.join(names)}" for where, names in groups.items()]


def vendor_source(source: ProjectSource, module: str) -> str:
    """The source of ``module`` as it is written under ``scripts/``: project imports resolved to the defining
    modules and renamed (:func:`plan_vendoring`), other mentions of ``pipeline.<name>`` renamed.

    Raises:
        VendoringError: an import statement that shares its line with other code (it cannot be rewritten alone).
    """
    path = source.module_file(module)
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    edits = []
    for node in ast.walk(source.tree(module)):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        statements = _rewritten_import(source, module, node)
        if statements is None:
            continue
        first, last = lines[node.lineno - 1], lines[node.end_lineno - 1]
        before, after = first[: node.col_offset], last[node.end_col_offset:]
        if before.strip() or (after.strip() and not after.strip().startswith("#")):
            raise VendoringError(f"{path}:{node.lineno}: an import that shares its line with other code; "
                                 "put it on a line of its own")
        indent = before
        ending = after.rstrip("\r\n")
        block = "".join(f"{indent}{s}{ending if i == len(statements) - 1 else ''}\n" for i, s in enumerate(statements))
        edits.append((node.lineno - 1, node.end_lineno, block))
    for start, end, block in sorted(edits, reverse=True):
        lines[start:end] = [block]
    return _MENTION.sub(VENDOR_PACKAGE + ".", "".join(lines))


def stub_source(package: str) -> str:
    """The ``__init__.py`` of a package whose original is not needed: a docstring saying so."""
    return STUB_DOCSTRING.format(name=package)


def write_vendored(plan: VendoringPlan, root: Path, out: Path) -> list[Path]:
    """Write the plan's modules under ``out/scripts/`` (the bundle folder being built).

    Args:
        plan: from :func:`plan_vendoring`.
        root: the folder holding the ``pipeline`` package.
        out: the bundle folder.

    Returns:
        The files written.

    Raises:
        VendoringError: see :func:`vendor_source`.
    """
    source = ProjectSource(root)
    written = []
    for module, path in sorted(plan.modules.items()):
        relative = Path(*module.split(".")[1:])
        target = out / VENDOR_PACKAGE / relative / "__init__.py" if path.name == "__init__.py" else \
            (out / VENDOR_PACKAGE / relative).with_suffix(".py")
        target.parent.mkdir(parents=True, exist_ok=True)
        text = stub_source(module) if module in plan.stubs else vendor_source(source, module)
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return written
