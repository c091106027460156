"""CodeQA stand-in: four-option questions over a real Python source tree, answered from its code.

LongBench-v2's CodeQA cannot be fetched offline, so this task asks multiple-choice questions
whose answers are computed from the code itself with :mod:`ast`, and which mostly need reading
across files:

- ``override``: which of four classes overrides method ``M`` (defines it although a base class in
  the code base does too); the other three do not define ``M`` at all.
- ``call_count``: how many call expressions name function ``Z``; the wrong options are near the
  true count.
- ``defining_module``: which file defines ``X`` (a top-level ``def``/``class``), where ``X`` is
  imported by name in another file; the other files neither define, assign nor import ``X``.
- ``raises``: which exception class function ``F`` raises directly (a ``raise`` in its own body);
  the other options are exception classes ``F`` never raises directly.
- ``never_called``: which of four functions is never called (no code uses its name, not even a
  short string such as an ``__all__`` entry or a ``getattr`` prefix); the other three have a
  direct call that resolves to them.
- ``base_class``: which class ``X`` directly inherits from, the base being defined in another
  file; the other options are not ancestors of ``X``.

Entities are named by their plain name (``Class.method`` for methods), and only names that
identify a single definition in the code base are used, so every option is unambiguous; wrong
options are the same kind of entity from the same
code base, chosen to be plausible, and never also correct.

Source policy. ``CodeQATask(source=path)`` uses every ``.py`` file under ``path`` (trimmed when
larger than the length). By default the source is CPython's standard library, chosen per length
from its packages (test suites and the ``pydoc_data`` and ``encodings`` data tables excluded),
trying in order: (a) a whole package of 80-100% of the length, largest first; (b) packages
larger than the length, trimmed to it, the fullest trim first; (c) a combination: whole packages
largest first, then top-level modules by name, each added while it still fits (the whole library
for lengths beyond its size). Trimming keeps ``__init__.py`` files and then the smallest files
first, as many as fit, so a short context still spans many files. The first of at most eight
candidates whose code supports at least three question kinds is used (else the one supporting
the most). A file that does not parse is left out. A context's size is the sum of its files'
token counts. The standard library differs between Python versions, and so do the items built
from it.
"""

from __future__ import annotations

import ast
import builtins
import random
import re
import sysconfig
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import Final, TypeVar

from rlmx.bench.base import BenchItem
from rlmx.bench.scoring import multiple_choice
from rlmx.bench.tokens import TOKENIZER_NAME, count_tokens
from rlmx.exceptions import ConfigError

__all__ = ["QUESTION_KINDS", "CodeQATask"]

QUESTION_KINDS: Final = (
    "override",
    "call_count",
    "defining_module",
    "raises",
    "never_called",
    "base_class",
)

_T = TypeVar("_T")

_LETTERS: Final = "ABCD"
_PREAMBLE: Final = "The context holds the files of a Python code base (file path -> source code)."
_CLOSING: Final = "Answer with the letter of the correct option."

_SKIPPED_DIRS: Final = frozenset(
    {"test", "tests", "idle_test", "__pycache__", "site-packages", "dist-packages"}
)
_SKIPPED_PACKAGES: Final = frozenset({"test", "pydoc_data", "encodings", "__phello__"})
_MIN_KINDS: Final = 3
_MAX_CANDIDATES: Final = 8
_WHOLE_PACKAGE_SHARE: Final = 0.8

_BUILTIN_NAMES: Final = frozenset(dir(builtins))
_COMMON_EXCEPTIONS: Final = (
    "AttributeError",
    "IndexError",
    "KeyError",
    "LookupError",
    "NotImplementedError",
    "OSError",
    "RuntimeError",
    "TypeError",
    "ValueError",
)


# --------------------------------------------------------------------------------------------
# Source files and their selection


@dataclass(frozen=True, slots=True)
class _SourceFile:
    path: str
    """Posix path relative to the source root: the context key."""
    module: str
    """Dotted module name, used to resolve imports."""
    text: str
    tokens: int


def _module_name(relative: Path, prefix: str = "") -> str:
    parts = list(relative.with_suffix("").parts)
    if parts and parts[-1] == "__init__":
        parts.pop()
    dotted = ".".join(parts)
    if prefix:
        return f"{prefix}.{dotted}" if dotted else prefix
    return dotted


def _read_tree(root: Path, prefix: str, relative_to: Path) -> list[_SourceFile]:
    """Every ``.py`` file under ``root``, skipping test suites, caches and hidden folders."""
    files: list[_SourceFile] = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(relative_to)
        if any(part in _SKIPPED_DIRS or part.startswith(".") for part in relative.parts[:-1]):
            continue
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        files.append(
            _SourceFile(
                path=relative.as_posix(),
                module=_module_name(relative, prefix),
                text=text,
                tokens=count_tokens(text),
            )
        )
    return files


def _stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


@cache
def _stdlib_packages() -> dict[str, tuple[_SourceFile, ...]]:
    root = _stdlib_root()
    packages: dict[str, tuple[_SourceFile, ...]] = {}
    for folder in sorted(root.iterdir()):
        if folder.name in _SKIPPED_PACKAGES or not (folder / "__init__.py").is_file():
            continue
        files = tuple(_read_tree(folder, "", root))
        if files:
            packages[folder.name] = files
    return packages


@cache
def _stdlib_modules() -> tuple[_SourceFile, ...]:
    root = _stdlib_root()
    return tuple(
        _SourceFile(
            path=path.name,
            module=path.stem,
            text=(text := path.read_text(encoding="utf-8", errors="replace")),
            tokens=count_tokens(text),
        )
        for path in sorted(root.glob("*.py"))
        if path.is_file()
    )


def _trim(files: Sequence[_SourceFile], budget: int) -> list[_SourceFile]:
    """The package ``__init__.py`` files first, then the smallest files, while they fit."""
    ordered = sorted(files, key=lambda f: (not f.path.endswith("__init__.py"), f.tokens, f.path))
    chosen: list[_SourceFile] = []
    used = 0
    for file in ordered:
        if used + file.tokens <= budget:
            chosen.append(file)
            used += file.tokens
    return sorted(chosen, key=lambda f: f.path)


def _total(files: Iterable[_SourceFile]) -> int:
    return sum(f.tokens for f in files)


def _stdlib_candidates(length: int) -> Iterable[tuple[str, list[_SourceFile]]]:
    """Candidate file sets for ``length`` tokens, best first (see the module docstring)."""
    packages = _stdlib_packages()
    sizes = {name: _total(files) for name, files in packages.items()}
    whole = sorted(
        (n for n, s in sizes.items() if _WHOLE_PACKAGE_SHARE * length <= s <= length),
        key=lambda n: (-sizes[n], n),
    )
    for name in whole:
        yield f"stdlib:{name}", list(packages[name])
    trimmed = {n: _trim(packages[n], length) for n, s in sizes.items() if s > length}
    for name in sorted(trimmed, key=lambda n: (-_total(trimmed[n]), n)):
        yield f"stdlib:{name} (trimmed)", trimmed[name]
    combined: list[_SourceFile] = []
    names: list[str] = []
    used = 0
    for name in sorted(packages, key=lambda n: (-sizes[n], n)):
        if used + sizes[name] <= length:
            combined.extend(packages[name])
            names.append(name)
            used += sizes[name]
    modules = 0
    for module in _stdlib_modules():
        if used + module.tokens <= length:
            combined.append(module)
            used += module.tokens
            modules += 1
    label = "+".join(names) if len(names) <= 4 else f"{len(names)} packages"
    yield f"stdlib:{label} + {modules} modules", sorted(combined, key=lambda f: f.path)


def _folder_candidates(root: Path, length: int) -> Iterable[tuple[str, list[_SourceFile]]]:
    if not root.is_dir():
        raise ConfigError(
            f"CodeQA source {str(root)!r} is not a folder; give a folder of .py files"
        )
    prefix = root.name if (root / "__init__.py").is_file() else ""
    files = _read_tree(root, prefix, root)
    if not files:
        raise ConfigError(f"CodeQA source {str(root)!r} holds no .py files; give a Python tree")
    if _total(files) <= length:
        yield str(root), files
    else:
        yield f"{root} (trimmed)", _trim(files, length)


# --------------------------------------------------------------------------------------------
# The code index


@dataclass(frozen=True, slots=True)
class _ClassInfo:
    name: str
    path: str
    bases: tuple[str, ...]
    members: frozenset[str]
    """Every name bound in the class body: methods, attributes, aliases."""
    methods: frozenset[str]


@dataclass(frozen=True, slots=True)
class _FunctionInfo:
    name: str
    qualname: str
    path: str
    module_level: bool
    raises: frozenset[str]


@dataclass(frozen=True, slots=True)
class _CallSite:
    name: str
    path: str
    caller: str | None
    """Qualified name of the innermost enclosing function, if any."""
    bare: bool
    """Written ``name(...)`` rather than ``<expression>.name(...)``."""


@dataclass(frozen=True, slots=True)
class _ImportedName:
    importer: str
    name: str
    source_module: str


@dataclass
class _CodeIndex:
    files: dict[str, str] = field(default_factory=dict)
    module_paths: dict[str, str] = field(default_factory=dict)
    classes: list[_ClassInfo] = field(default_factory=list)
    functions: list[_FunctionInfo] = field(default_factory=list)
    calls: list[_CallSite] = field(default_factory=list)
    imports: list[_ImportedName] = field(default_factory=list)
    definitions: Counter[str] = field(default_factory=Counter)
    """How often each name is defined by ``def`` or ``class``, anywhere."""
    qualnames: Counter[str] = field(default_factory=Counter)
    references: Counter[str] = field(default_factory=Counter)
    """Names used as ``Name``, ``Attribute`` or imported: any use besides a definition."""
    strings: set[str] = field(default_factory=set)
    top_defined: dict[str, set[str]] = field(default_factory=dict)
    top_bound: dict[str, set[str]] = field(default_factory=dict)

    # The questions draw from these many times per item set; each is computed once.

    def unique(self, name: str) -> bool:
        return self.definitions[name] == 1

    @cached_property
    def unique_classes(self) -> dict[str, _ClassInfo]:
        return {c.name: c for c in self.classes if self.unique(c.name)}

    @cached_property
    def unique_functions(self) -> dict[str, _FunctionInfo]:
        return {
            f.name: f
            for f in self.functions
            if f.module_level and self.unique(f.name) and not f.name.startswith("__")
        }

    @cached_property
    def ancestors(self) -> dict[str, list[_ClassInfo]]:
        """Each unique class's base classes resolvable by unique name here, nearest first."""
        known = self.unique_classes
        result: dict[str, list[_ClassInfo]] = {}
        for cls in known.values():
            found: list[_ClassInfo] = []
            pending = list(cls.bases)
            seen = {cls.name}
            while pending:
                name = pending.pop(0)
                if name in seen or name not in known:
                    continue
                seen.add(name)
                found.append(known[name])
                pending.extend(known[name].bases)
            result[cls.name] = found
        return result

    @cached_property
    def all_raised(self) -> frozenset[str]:
        return frozenset(e for f in self.functions for e in f.raises)

    @cached_property
    def importer_pairs(self) -> set[tuple[str, str, str]]:
        """``(name, defining path, importing path)`` for every resolvable ``from`` import."""
        pairs: set[tuple[str, str, str]] = set()
        for imported in self.imports:
            source_path = self.module_paths.get(imported.source_module)
            if source_path is not None:
                pairs.add((imported.name, source_path, imported.importer))
        return pairs


def _terminal_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _bindings(body: Sequence[ast.stmt]) -> tuple[set[str], set[str]]:
    """``(defined, bound)`` names of a module or class body, looking inside ``if``/``try``/
    ``with``/loops but not into functions: ``defined`` by ``def``/``class``; ``bound`` by those,
    assignments and imports."""
    defined: set[str] = set()
    bound: set[str] = set()
    pending: list[ast.AST] = list(body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defined.add(node.name)
            bound.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                bound.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                bound.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        else:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt | ast.excepthandler | ast.match_case):
                    pending.append(child)
    return defined, bound


def _direct_raises(function: ast.FunctionDef | ast.AsyncFunctionDef) -> frozenset[str]:
    """Exception class names in ``raise`` statements of the function's own body."""
    found: set[str] = set()
    pending: list[ast.AST] = list(function.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Raise) and node.exc is not None:
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            name = _terminal_name(target)
            # Class names are CapWords; ``raise err`` or ``raise SOME_CONSTANT`` name no class.
            if name and name[0].isupper() and not name.isupper():
                found.add(name)
        for child in ast.iter_child_nodes(node):
            # Nested functions and classes raise on their own account, not this function's.
            if not isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda
            ):
                pending.append(child)
    return frozenset(found)


class _ModuleVisitor(ast.NodeVisitor):
    def __init__(self, index: _CodeIndex, source: _SourceFile) -> None:
        self.index = index
        self.source = source
        self.scope: list[str] = []
        self.kinds: list[str] = []
        self.functions: list[str] = []

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.index.definitions[node.name] += 1
        defined, bound = _bindings(node.body)
        methods = {
            n.name for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        self.index.classes.append(
            _ClassInfo(
                name=node.name,
                path=self.source.path,
                bases=tuple(n for b in node.bases if (n := _terminal_name(b))),
                members=frozenset(defined | bound),
                methods=frozenset(methods),
            )
        )
        self._enter(node, "class")

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.index.definitions[node.name] += 1
        qualname = ".".join([*self.scope, node.name])
        self.index.qualnames[qualname] += 1
        self.index.functions.append(
            _FunctionInfo(
                name=node.name,
                qualname=qualname,
                path=self.source.path,
                module_level=not self.scope,
                raises=_direct_raises(node),
            )
        )
        self.functions.append(qualname)
        self._enter(node, "function")
        self.functions.pop()

    visit_FunctionDef = _visit_function
    visit_AsyncFunctionDef = _visit_function

    def _enter(self, node: ast.AST, kind: str) -> None:
        name = getattr(node, "name", "")
        self.scope.append(name)
        self.kinds.append(kind)
        self.generic_visit(node)
        self.scope.pop()
        self.kinds.pop()

    def visit_Call(self, node: ast.Call) -> None:
        name = _terminal_name(node.func)
        if name:
            self.index.calls.append(
                _CallSite(
                    name=name,
                    path=self.source.path,
                    caller=self.functions[-1] if self.functions else None,
                    bare=isinstance(node.func, ast.Name),
                )
            )
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        self.index.references[node.id] += 1

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self.index.references[node.attr] += 1
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and len(node.value) < 200:
            self.index.strings.add(node.value)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        source = self._resolve(node)
        for alias in node.names:
            self.index.references[alias.name] += 1
            if alias.asname:
                self.index.references[alias.asname] += 1
            elif source is not None:
                self.index.imports.append(_ImportedName(self.source.path, alias.name, source))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            for part in alias.name.split("."):
                self.index.references[part] += 1

    def _resolve(self, node: ast.ImportFrom) -> str | None:
        if not node.level:
            return node.module
        parts = self.source.module.split(".") if self.source.module else []
        if not self.source.path.endswith("__init__.py"):
            parts = parts[:-1]
        if node.level - 1 > len(parts):
            return None
        parts = parts[: len(parts) - (node.level - 1)]
        if node.module:
            parts.append(node.module)
        return ".".join(parts) or None


def _parse(source: _SourceFile) -> ast.Module | None:
    with warnings.catch_warnings():
        # Old escapes in string literals warn at parse time; they do not matter here.
        warnings.simplefilter("ignore")
        try:
            return ast.parse(source.text, filename=source.path)
        except (SyntaxError, ValueError):
            return None


def _build_index(files: Sequence[_SourceFile]) -> tuple[_CodeIndex, list[_SourceFile]]:
    """The index of the files that parse, and those files."""
    index = _CodeIndex()
    kept: list[_SourceFile] = []
    for source in files:
        tree = _parse(source)
        if tree is None:
            continue
        kept.append(source)
        index.files[source.path] = source.text
        index.module_paths[source.module] = source.path
        defined, bound = _bindings(tree.body)
        index.top_defined[source.path] = defined
        index.top_bound[source.path] = bound
        _ModuleVisitor(index, source).visit(tree)
    return index, kept


# --------------------------------------------------------------------------------------------
# Questions


@dataclass(frozen=True, slots=True)
class _Question:
    kind: str
    text: str
    answer: str
    distractors: tuple[str, ...]
    entity: str


def _pick(rng: random.Random, pools: Sequence[Sequence[str]], count: int) -> list[str] | None:
    """``count`` distinct names, drawn from the first pools first (each pool sorted first)."""
    chosen: list[str] = []
    for pool in pools:
        remaining = sorted(set(pool) - set(chosen))
        take = min(count - len(chosen), len(remaining))
        chosen.extend(rng.sample(remaining, take))
        if len(chosen) == count:
            return chosen
    return None


def _shuffled(rng: random.Random, candidates: Sequence[_T]) -> list[_T]:
    """The candidates in a seeded random order; an asker uses the first it can ask about."""
    return rng.sample(list(candidates), len(candidates))


def _folder(path: str) -> str:
    return path.rpartition("/")[0]


class _Candidates:
    """What each question kind can ask about in one code base, computed once per index."""

    def __init__(self, index: _CodeIndex) -> None:
        self.index = index

    @cached_property
    def overrides(self) -> list[tuple[_ClassInfo, str]]:
        """``(class, method)`` where the class defines a method an ancestor also defines."""
        index = self.index
        found: list[tuple[_ClassInfo, str]] = []
        for cls in index.unique_classes.values():
            ancestors = index.ancestors[cls.name]
            for method in sorted(cls.methods):
                if not method.startswith("__") and any(method in a.members for a in ancestors):
                    found.append((cls, method))
        return found

    @cached_property
    def call_counts(self) -> list[tuple[_FunctionInfo, int, bool]]:
        """``(function, call expressions naming it, called from another file)``."""
        counts: Counter[str] = Counter()
        paths: defaultdict[str, set[str]] = defaultdict(set)
        for call in self.index.calls:
            counts[call.name] += 1
            paths[call.name].add(call.path)
        found: list[tuple[_FunctionInfo, int, bool]] = []
        for name, function in sorted(self.index.unique_functions.items()):
            if name in _BUILTIN_NAMES or counts[name] == 0:
                continue
            found.append((function, counts[name], bool(paths[name] - {function.path})))
        return found

    @cached_property
    def defining_modules(self) -> list[tuple[str, str]]:
        """``(name, defining path)`` for names imported by name from the one file defining them."""
        defined_in: defaultdict[str, list[str]] = defaultdict(list)
        for path, names in self.index.top_defined.items():
            for name in names:
                defined_in[name].append(path)
        found = {
            (name, source)
            for name, source, importer in self.index.importer_pairs
            if source != importer and defined_in.get(name) == [source]
        }
        return sorted(found)

    @cached_property
    def raisers(self) -> list[_FunctionInfo]:
        """Functions with direct raises whose qualified name is unambiguous: defined once, in
        a function or class whose own name is defined once."""
        index = self.index
        return [
            f
            for f in index.functions
            if f.raises
            and index.qualnames[f.qualname] == 1
            and index.unique(f.qualname.split(".")[0])
        ]

    @cached_property
    def never_called(self) -> list[str]:
        """Module-level functions whose name is used nowhere, not even inside a string."""
        index = self.index
        # ``getattr(self, "visit_" + kind)`` calls functions by a prefix: leave those out.
        prefixes = [s for s in index.strings if len(s) > 1 and s.endswith("_") and s.isidentifier()]
        words = {w for s in index.strings for w in re.findall(r"\w+", s)}
        return [
            name
            for name in sorted(index.unique_functions)
            if index.references[name] == 0
            and name not in words
            and not any(name.startswith(p) for p in prefixes)
            and not name.startswith("test")
        ]

    @cached_property
    def certainly_called(self) -> list[str]:
        """Module-level functions with a bare call, outside their own body, that resolves to
        them: in their own file or in a file importing them by name from it."""
        index = self.index
        functions = index.unique_functions
        called: set[str] = set()
        for call in index.calls:
            function = functions.get(call.name)
            if function is None or not call.bare or call.name in _BUILTIN_NAMES:
                continue
            own_body = call.caller is not None and (
                call.caller == function.qualname or call.caller.startswith(function.qualname + ".")
            )
            resolves = call.path == function.path or (
                (call.name, function.path, call.path) in index.importer_pairs
            )
            if resolves and not own_body:
                called.add(call.name)
        return sorted(called)

    @cached_property
    def cross_file_bases(self) -> list[tuple[_ClassInfo, str]]:
        """``(class, base name)`` where the base is a class defined in another file."""
        classes = self.index.unique_classes
        return [
            (cls, base)
            for cls in classes.values()
            for base in cls.bases
            if base in classes and classes[base].path != cls.path
        ]


def _ask_override(found: _Candidates, rng: random.Random) -> _Question | None:
    index = found.index
    for cls, method in _shuffled(rng, found.overrides):
        lacking = [
            c
            for c in index.unique_classes.values()
            if c.name != cls.name and method not in c.members
        ]
        inheriting = [
            c.name for c in lacking if any(method in a.members for a in index.ancestors[c.name])
        ]
        nearby = [c.name for c in lacking if _folder(c.path) == _folder(cls.path)]
        distractors = _pick(rng, [inheriting, nearby, [c.name for c in lacking]], 3)
        if distractors is not None:
            return _Question(
                kind="override",
                text=(
                    f"Which of these classes overrides the method `{method}`: it defines "
                    f"`{method}` itself, and one of its base classes in this code base also "
                    f"defines `{method}`?"
                ),
                answer=cls.name,
                distractors=tuple(distractors),
                entity=f"{cls.name}.{method}",
            )
    return None


def _ask_call_count(found: _Candidates, rng: random.Random) -> _Question | None:
    if not found.call_counts:
        return None
    across = [c for c in found.call_counts if c[2]]
    function, count, _ = rng.choice(across or found.call_counts)
    nearby = [str(count + d) for d in (-3, -2, -1, 1, 2, 3, 4) if count + d >= 0]
    name = function.name
    return _Question(
        kind="call_count",
        text=(
            f"How many call expressions in this code base call something named `{name}`, "
            f"written `{name}(...)` or `<expression>.{name}(...)`? Count all files; comments "
            "and strings do not count."
        ),
        answer=str(count),
        distractors=tuple(rng.sample(nearby, 3)),
        entity=name,
    )


def _ask_defining_module(found: _Candidates, rng: random.Random) -> _Question | None:
    for name, path in _shuffled(rng, found.defining_modules):
        unrelated = [p for p, bound in sorted(found.index.top_bound.items()) if name not in bound]
        nearby = [p for p in unrelated if _folder(p) == _folder(path)]
        distractors = _pick(rng, [nearby, unrelated], 3)
        if distractors is not None:
            return _Question(
                kind="defining_module",
                text=(
                    f"`{name}` is imported by name elsewhere in this code base (`from ... "
                    f"import {name}`). Which file defines `{name}` with a top-level `def` or "
                    "`class` statement?"
                ),
                answer=path,
                distractors=tuple(distractors),
                entity=name,
            )
    return None


def _ask_raises(found: _Candidates, rng: random.Random) -> _Question | None:
    if not found.raisers:
        return None
    classes = found.index.unique_classes

    def foreign(function: _FunctionInfo) -> list[str]:
        return sorted(
            e for e in function.raises if e in classes and classes[e].path != function.path
        )

    # Prefer exceptions defined in another file than the raising function: reading across files.
    across = [f for f in found.raisers if foreign(f)]
    function = rng.choice(across or found.raisers)
    answer = rng.choice(foreign(function) or sorted(function.raises))
    elsewhere = sorted(found.index.all_raised - function.raises)
    common = [e for e in _COMMON_EXCEPTIONS if e not in function.raises]
    distractors = _pick(rng, [elsewhere, common], 3)
    if distractors is None:  # pragma: no cover - _COMMON_EXCEPTIONS alone always suffice
        return None
    return _Question(
        kind="raises",
        text=(
            f"Which exception class does `{function.qualname}` raise directly, with a `raise` "
            "statement in its own body (not in functions it calls)?"
        ),
        answer=answer,
        distractors=tuple(distractors),
        entity=function.qualname,
    )


def _ask_never_called(found: _Candidates, rng: random.Random) -> _Question | None:
    if not found.never_called or len(found.certainly_called) < 3:
        return None
    name = rng.choice(found.never_called)
    functions = found.index.unique_functions
    folder = _folder(functions[name].path)
    nearby = [c for c in found.certainly_called if _folder(functions[c].path) == folder]
    distractors = _pick(rng, [nearby, found.certainly_called], 3)
    if distractors is None:  # pragma: no cover - three called functions were checked above
        return None
    return _Question(
        kind="never_called",
        text=(
            "Which of these functions is never called anywhere in this code base "
            "(no code calls it or even refers to it by name)?"
        ),
        answer=name,
        distractors=tuple(distractors),
        entity=name,
    )


def _ask_base_class(found: _Candidates, rng: random.Random) -> _Question | None:
    index = found.index
    classes = index.unique_classes
    used_as_base = {b for c in classes.values() for b in c.bases}
    for cls, base in _shuffled(rng, found.cross_file_bases):
        excluded = {cls.name, *cls.bases} | {a.name for a in index.ancestors[cls.name]}
        unrelated = [name for name in sorted(classes) if name not in excluded]
        base_like = [name for name in unrelated if name in used_as_base]
        beside_base = [name for name in unrelated if classes[name].path == classes[base].path]
        distractors = _pick(rng, [base_like, beside_base, unrelated], 3)
        if distractors is not None:
            return _Question(
                kind="base_class",
                text=(
                    f"Class `{cls.name}` directly inherits from which of these classes "
                    "(which one appears in its list of base classes)?"
                ),
                answer=base,
                distractors=tuple(distractors),
                entity=cls.name,
            )
    return None


_ASKERS: Final[dict[str, Callable[[_Candidates, random.Random], _Question | None]]] = {
    "override": _ask_override,
    "call_count": _ask_call_count,
    "defining_module": _ask_defining_module,
    "raises": _ask_raises,
    "never_called": _ask_never_called,
    "base_class": _ask_base_class,
}


def _supported_kinds(found: _Candidates) -> list[str]:
    """The question kinds this code base can produce (whatever the generator: every asker tries
    all its candidates before giving up)."""
    return [kind for kind in QUESTION_KINDS if _ASKERS[kind](found, random.Random(0)) is not None]


# --------------------------------------------------------------------------------------------
# The task


@dataclass(frozen=True, slots=True)
class _Corpus:
    label: str
    files: dict[str, str]
    tokens: int
    candidates: _Candidates
    kinds: tuple[str, ...]


def _choose_corpus(candidates: Iterable[tuple[str, list[_SourceFile]]]) -> _Corpus:
    best: _Corpus | None = None
    for tried, (label, files) in enumerate(candidates):
        if tried >= _MAX_CANDIDATES:
            break
        index, kept = _build_index(files)
        corpus = _Corpus(
            label=label,
            files={f.path: f.text for f in kept},
            tokens=_total(kept),
            candidates=(found := _Candidates(index)),
            kinds=tuple(_supported_kinds(found)),
        )
        if len(corpus.kinds) >= _MIN_KINDS:
            return corpus
        if best is None or len(corpus.kinds) > len(best.kinds):
            best = corpus
    if best is None or not best.kinds:
        raise ConfigError(
            "the CodeQA source has too little code to ask questions about (it needs several "
            "classes and functions across files); give a larger source or a larger length"
        )
    return best


@cache
def _stdlib_corpus(length: int) -> _Corpus:
    return _choose_corpus(_stdlib_candidates(length))


class CodeQATask:
    """Multiple-choice questions over a Python source tree: ``CodeQATask().items(131072, 50, 0)``.

    ``source`` is a folder of Python code; ``None`` picks from CPython's standard library by
    length. Every item's context maps relative file paths to their text; the gold is a letter.
    """

    name = "codeqa"

    def __init__(self, source: str | Path | None = None) -> None:
        self.source = None if source is None else Path(source)
        self._corpora: dict[int, _Corpus] = {}

    def _corpus(self, length: int) -> _Corpus:
        if self.source is None:
            return _stdlib_corpus(length)
        if length not in self._corpora:
            self._corpora[length] = _choose_corpus(_folder_candidates(self.source, length))
        return self._corpora[length]

    def items(self, length: int, n: int, seed: int) -> list[BenchItem]:
        """``n`` questions over a code base of at most ``length`` tokens.

        Item ``i`` depends only on ``(source, length, seed, i)`` and on the items before it
        (a question already asked is not asked again while others are available).
        """
        if length < 1:
            raise ConfigError(f"length must be a positive token count, not {length}")
        if n < 0:
            raise ConfigError(f"n must be zero or more items, not {n}")
        if n == 0:
            return []
        corpus = self._corpus(length)
        kinds = list(corpus.kinds)
        random.Random(f"codeqa|{corpus.label}|{length}|{seed}|kinds").shuffle(kinds)
        asked: set[tuple[str, str]] = set()
        items: list[BenchItem] = []
        for index in range(n):
            rng = random.Random(f"codeqa|{corpus.label}|{length}|{seed}|{index}")
            question = _next_question(corpus.candidates, kinds, index, rng, asked)
            asked.add((question.kind, question.entity))
            options = [question.answer, *question.distractors]
            rng.shuffle(options)
            gold = _LETTERS[options.index(question.answer)]
            listing = "\n".join(f"{_LETTERS[i]}) {o}" for i, o in enumerate(options))
            items.append(
                BenchItem(
                    task=self.name,
                    item_id=f"codeqa-L{length}-s{seed}-i{index}",
                    context=dict(corpus.files),
                    question=f"{_PREAMBLE}\n\n{question.text}\n\n{listing}\n\n{_CLOSING}",
                    gold=gold,
                    length=length,
                    meta={
                        "kind": question.kind,
                        "entity": question.entity,
                        "options": options,
                        "source": corpus.label,
                        "files": len(corpus.files),
                        "context_tokens": corpus.tokens,
                        "tokenizer": TOKENIZER_NAME,
                    },
                )
            )
        return items

    def score(self, item: BenchItem, answer: str) -> float:
        """1.0 when the answer picks the gold letter, else 0.0."""
        return multiple_choice(answer, str(item.gold))


_MAX_DRAWS: Final = 12


def _next_question(
    found: _Candidates,
    kinds: Sequence[str],
    position: int,
    rng: random.Random,
    asked: set[tuple[str, str]],
) -> _Question:
    """A question of the kind this position rotates to, preferring one not asked yet."""
    fallback: _Question | None = None
    for offset in range(len(kinds)):
        kind = kinds[(position + offset) % len(kinds)]
        for _ in range(_MAX_DRAWS):
            question = _ASKERS[kind](found, rng)
            if question is None:  # pragma: no cover - kinds lists only kinds that can be asked
                break
            if (question.kind, question.entity) not in asked:
                return question
            fallback = fallback or question
    # Every kind's questions are used up: repeat one rather than fail.
    assert fallback is not None  # kinds only lists kinds that produce questions
    return fallback
