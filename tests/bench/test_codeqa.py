"""CodeQA stand-in: questions over a source tree, checked against the code independently."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlmx.bench import codeqa
from rlmx.bench.base import BenchItem, Task
from rlmx.bench.codeqa import QUESTION_KINDS, CodeQATask
from rlmx.bench.scoring import chosen_option, multiple_choice
from rlmx.bench.tokens import count_tokens
from rlmx.exceptions import ConfigError

SHAPES = {
    "__init__.py": '''
"""Shapes and their renderers."""
from .base import Shape, ShapeError
from .circle import Circle
''',
    "base.py": '''
class ShapeError(Exception):
    """A shape was asked for something it cannot do."""


class Shape:
    sides = 0

    def area(self):
        raise NotImplementedError

    def perimeter(self):
        raise NotImplementedError

    def describe(self):
        return f"{type(self).__name__} with area {self.area()}"

    def scale(self, factor):
        if factor <= 0:
            raise ShapeError("factor must be positive")
        return self


def check_positive(value):
    if value <= 0:
        raise ValueError("must be positive")
    return value
''',
    "circle.py": """
import math

from .base import Shape, ShapeError, check_positive
from .util import clamp


class Circle(Shape):
    def __init__(self, radius):
        self.radius = check_positive(radius)

    def area(self):
        return math.pi * self.radius**2

    def perimeter(self):
        return 2 * math.pi * self.radius

    def grow(self, amount):
        if amount < 0:
            raise ShapeError("cannot shrink")
        self.radius = clamp(self.radius + amount, 0, 100)


class Ring(Circle):
    def __init__(self, radius, inner):
        super().__init__(radius)
        self.inner = check_positive(inner)

    def area(self):
        return super().area() - math.pi * self.inner**2
""",
    "polygon.py": """
from .base import Shape, check_positive
from .util import clamp, mean


class PolygonError(LookupError):
    pass


class Polygon(Shape):
    def __init__(self, *lengths):
        self.lengths = [check_positive(x) for x in lengths]

    def perimeter(self):
        return sum(self.lengths)

    def side(self, index):
        if index >= len(self.lengths):
            raise PolygonError(index)
        return self.lengths[index]


class Square(Polygon):
    def __init__(self, length):
        super().__init__(length, length, length, length)

    def area(self):
        return self.lengths[0] ** 2


class Triangle(Polygon):
    def average_side(self):
        return mean(self.lengths)

    def validate(self):
        a, b, c = sorted(self.lengths)
        if a + b <= c:
            raise TypeError("not a triangle")
        return clamp(a, 0, c)
""",
    "util.py": """
def clamp(value, low, high):
    return max(low, min(high, value))


def mean(values):
    return sum(values) / len(values)


def legacy_round(value):
    return int(value + 0.5)


def _debug_dump(shape):
    print(shape.describe())


class Registry:
    def __init__(self):
        self.items = {}

    def add(self, name, shape):
        if name in self.items:
            raise KeyError(name)
        self.items[name] = shape
""",
    "render/__init__.py": "",
    "render/text.py": """
from ..base import Shape
from ..util import clamp, mean


class TextRenderer:
    def render(self, shape):
        return shape.describe()

    def width(self, text):
        return clamp(len(text), 0, 80)


class FancyRenderer(TextRenderer):
    def render(self, shape):
        return "*" + super().render(shape) + "*"


def render_all(shapes):
    return [TextRenderer().render(s) for s in shapes if isinstance(s, Shape)]


def average_area(shapes):
    return mean([s.area() for s in shapes])
""",
    "extras.py": """
from . import util
from .... import nowhere
from .util import mean as average

HANDLERS = [print]


class Box(dict[str, int]):
    def total(self):
        return average(list(self.values()))


def countdown(n):
    return countdown(n - 1) if n else HANDLERS[0]("done")
""",
    "broken.py": "def half(:\n    pass\n",
}

BIG = 100_000


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.lstrip("\n"))
    return root


@pytest.fixture
def shapes(tmp_path: Path) -> Path:
    return _write(tmp_path / "shapes", SHAPES)


def _bytes(items: list[BenchItem]) -> bytes:
    return json.dumps([dataclasses.asdict(i) for i in items], sort_keys=True).encode()


# ---------------------------------------------------------------------------------------------
# Independent derivations from the fixture's code


def _trees(root: Path) -> dict[str, ast.Module]:
    trees = {}
    for path in sorted(root.rglob("*.py")):
        try:
            trees[path.relative_to(root).as_posix()] = ast.parse(path.read_text())
        except SyntaxError:
            continue
    return trees


def _classes(trees: dict[str, ast.Module]) -> dict[str, tuple[str, ast.ClassDef]]:
    return {
        node.name: (path, node)
        for path, tree in trees.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
    }


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    return node.attr if isinstance(node, ast.Attribute) else None


def _defines(cls: ast.ClassDef, name: str) -> bool:
    return any(
        (isinstance(n, ast.FunctionDef) and n.name == name)
        or (isinstance(n, ast.Assign) and any(_name(t) == name for t in n.targets))
        for n in cls.body
    )


def _base_names(cls: ast.ClassDef) -> list[str]:
    return [name for b in cls.bases if (name := _name(b))]


def _is_correct(kind: str, entity: str, option: str, root: Path) -> bool:
    trees = _trees(root)
    classes = _classes(trees)
    if kind == "override":
        # Correct: the class defines the method and so does one of its ancestors here.
        _, method = entity.split(".")
        if not _defines(classes[option][1], method):
            return False
        pending = _base_names(classes[option][1])
        while pending:
            base = pending.pop()
            if base in classes:
                if _defines(classes[base][1], method):
                    return True
                pending.extend(_base_names(classes[base][1]))
        return False
    if kind == "call_count":
        calls = sum(
            1
            for tree in trees.values()
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and (
                getattr(node.func, "id", None) == entity
                or getattr(node.func, "attr", None) == entity
            )
        )
        return int(option) == calls
    if kind == "defining_module":
        return any(
            isinstance(n, ast.FunctionDef | ast.ClassDef) and n.name == entity
            for n in trees[option].body
        )
    if kind == "raises":
        owner, _, name = entity.rpartition(".")
        scope = classes[owner][1].body if owner else [n for t in trees.values() for n in t.body]
        function = next(n for n in scope if isinstance(n, ast.FunctionDef) and n.name == name)
        raised = {
            _name(n.exc.func if isinstance(n.exc, ast.Call) else n.exc)
            for n in ast.walk(function)
            if isinstance(n, ast.Raise) and n.exc is not None
        }
        return option in raised
    if kind == "never_called":
        text = "\n".join(p.read_text() for p in root.rglob("*.py"))
        return len(re.findall(rf"\b{re.escape(option)}\b", text)) == 1
    if kind == "base_class":
        return option in _base_names(classes[entity][1])
    raise AssertionError(kind)


# ---------------------------------------------------------------------------------------------


def test_implements_the_task_protocol() -> None:
    task = CodeQATask()
    assert isinstance(task, Task)
    assert task.name == "codeqa"


def test_every_question_has_exactly_one_correct_option(shapes: Path) -> None:
    items = CodeQATask(shapes).items(BIG, 24, seed=0)
    assert {i.meta["kind"] for i in items} == set(QUESTION_KINDS)
    for item in items:
        options = item.meta["options"]
        assert len(options) == 4 == len(set(options))
        correct = [
            letter
            for letter, option in zip("ABCD", options, strict=True)
            if _is_correct(item.meta["kind"], item.meta["entity"], option, shapes)
        ]
        assert correct == [item.gold], (item.question, options)
        listing = "\n".join(f"{letter}) {o}" for letter, o in zip("ABCD", options, strict=True))
        assert listing in item.question
        assert item.question.endswith("Answer with the letter of the correct option.")


def test_distractors_are_plausible(shapes: Path) -> None:
    items = CodeQATask(shapes).items(BIG, 30, seed=5)
    trees = _trees(shapes)
    classes = _classes(trees)
    functions = {n.name for t in trees.values() for n in t.body if isinstance(n, ast.FunctionDef)}
    for item in items:
        kind, options = item.meta["kind"], item.meta["options"]
        if kind in ("override", "base_class"):
            assert all(o in classes for o in options)
        elif kind == "never_called":
            assert all(o in functions for o in options)
        elif kind == "defining_module":
            assert all(o in trees for o in options)
        elif kind == "call_count":
            true = int(options["ABCD".index(item.gold)])
            assert all(abs(int(o) - true) <= 4 for o in options)
        else:
            assert all(re.fullmatch(r"[A-Z]\w*", o) for o in options)


def test_same_arguments_give_identical_bytes(shapes: Path) -> None:
    first = CodeQATask(shapes).items(BIG, 12, seed=3)
    again = CodeQATask(str(shapes)).items(BIG, 12, seed=3)
    assert _bytes(first) == _bytes(again)
    assert _bytes(CodeQATask(shapes).items(BIG, 5, seed=3)) == _bytes(first[:5])
    assert [i.item_id for i in first[:2]] == ["codeqa-L100000-s3-i0", "codeqa-L100000-s3-i1"]
    other = CodeQATask(shapes).items(BIG, 12, seed=4)
    assert [i.question for i in other] != [i.question for i in first]
    gold_letters = {i.gold for i in first + other}
    assert len(gold_letters) >= 3  # option order is shuffled


def test_context_is_the_parsed_files(shapes: Path) -> None:
    (shapes / "folder.py").mkdir()  # a folder named like a module is not a file
    (shapes / ".cache").mkdir()
    (shapes / ".cache" / "hidden.py").write_text("X = 1\n")
    task = CodeQATask(shapes)
    item = task.items(BIG, 1, seed=0)[0]
    assert task.items(BIG, 1, seed=0)[0] == item  # the corpus is built once per length
    assert isinstance(item.context, dict)
    assert "broken.py" not in item.context
    assert sorted(item.context) == sorted(p for p in SHAPES if p != "broken.py")
    assert item.context["base.py"] == SHAPES["base.py"].lstrip("\n")
    assert item.meta["context_tokens"] == sum(count_tokens(t) for t in item.context.values())
    assert item.meta["source"] == str(shapes)
    assert item.length == BIG


def test_more_items_than_distinct_questions_repeat_some(shapes: Path) -> None:
    items = CodeQATask(shapes).items(BIG, 80, seed=0)
    keys = [(i.meta["kind"], i.meta["entity"]) for i in items]
    assert len(set(keys)) < 80
    assert len(set(keys)) >= 20


def test_trimmed_source_keeps_init_and_small_files(shapes: Path) -> None:
    total = sum(count_tokens(t.lstrip("\n")) for p, t in SHAPES.items() if p != "broken.py")
    ((label, files),) = codeqa._folder_candidates(shapes, total // 2)
    assert label.endswith("(trimmed)")
    assert sum(f.tokens for f in files) <= total // 2
    paths = [f.path for f in files]
    assert "__init__.py" in paths and "render/__init__.py" in paths
    assert paths == sorted(paths)
    assert {f.module for f in files} >= {"shapes", "shapes.render"}


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"notes.txt": "hello"}, "holds no .py files"),
        ({"a.py": "def f():\n    return 1\n"}, "too little code"),
        (
            {
                "a.py": "class A:\n    def m(self):\n        pass\n",
                "b.py": "from a import A\n\n\nclass B(A):\n    def m(self):\n        pass\n",
            },
            "too little code",
        ),
    ],
)
def test_sources_without_questions_are_refused(
    tmp_path: Path, files: dict[str, str], message: str
) -> None:
    _write(tmp_path, files)
    with pytest.raises(ConfigError, match=message):
        CodeQATask(tmp_path).items(BIG, 1, seed=0)


def test_bad_arguments(tmp_path: Path, shapes: Path) -> None:
    with pytest.raises(ConfigError, match="not a folder"):
        CodeQATask(tmp_path / "missing").items(BIG, 1, seed=0)
    task = CodeQATask(shapes)
    with pytest.raises(ConfigError, match="positive token count"):
        task.items(0, 1, seed=0)
    with pytest.raises(ConfigError, match="zero or more"):
        task.items(BIG, -2, seed=0)
    assert task.items(BIG, 0, seed=0) == []


def test_choose_corpus_prefers_richer_candidates(shapes: Path) -> None:
    rich = codeqa._read_tree(shapes, "shapes", shapes)
    poor = [f for f in rich if f.path == "util.py"]
    chosen = codeqa._choose_corpus([("poor", poor), ("rich", rich)])
    assert chosen.label == "rich"
    assert len(chosen.kinds) == len(QUESTION_KINDS)
    # With no candidate reaching three kinds, the one with the most kinds wins.
    thin = [f for f in rich if f.path in ("util.py", "polygon.py")]
    fallback = codeqa._choose_corpus([("poor", poor), ("thin", thin), ("poor again", poor)])
    assert fallback.label == "thin"
    # Only the first candidates are tried.
    many = [(f"poor {i}", poor) for i in range(codeqa._MAX_CANDIDATES)] + [("rich", rich)]
    assert codeqa._choose_corpus(many).label == "poor 0"


# ---------------------------------------------------------------------------------------------
# Scoring


@pytest.mark.parametrize(
    ("output", "letter"),
    [
        ("B", "B"),
        ("(C)", "C"),
        ("D) TextRenderer", "D"),
        ("A.", "A"),
        ("  b", None),
        ("The correct answer is (D).", "D"),
        ("**Answer: B**", "B"),
        ("Answer: C", "C"),
        ("I first thought A, but the answer is C.", "C"),
        ("The correct answer is B, not A. Answer: A", "A"),
        ("Option D fits best.", "D"),
        ("It must be the class in (B) because it overrides.", "B"),
        ("A good guess would be the circle module.", None),
        ("Answer: a", None),
        ("The answer is Apple", None),
        ("", None),
    ],
)
def test_letter_extraction(output: str, letter: str | None) -> None:
    assert chosen_option(output) == letter


def test_score_uses_the_gold_letter(shapes: Path) -> None:
    task = CodeQATask(shapes)
    item = task.items(BIG, 1, seed=0)[0]
    wrong = next(letter for letter in "ABCD" if letter != item.gold)
    assert task.score(item, f"Answer: {item.gold}") == 1.0
    assert task.score(item, f"The answer is ({wrong})") == 0.0
    assert task.score(item, "I do not know") == 0.0
    assert multiple_choice("B)", " b ") == 1.0


# ---------------------------------------------------------------------------------------------
# The default source: CPython's standard library


@pytest.fixture
def fake_stdlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "lib"
    _write(root / "alpha", SHAPES)
    _write(root / "beta", {**SHAPES, "extra.py": "VALUE = 1\n" * 400})
    _write(root / "test", SHAPES)  # the test suite is skipped
    _write(root / "encodings", {"__init__.py": "X = 1\n"})  # data tables are skipped
    _write(root / "notes", {"readme.py": "X = 1\n"})  # not a package
    _write(root / "gamma", {"__init__.py": "", "tests/test_a.py": "X = 1\n"})
    _write(root / "delta", {"__init__.py": "X = 1\n"})
    _write(root / "epsilon", {"__init__.py": "Y = 2\n"})
    _write(root / ".hidden", {"__init__.py": "Z = 3\n"})
    _write(root, {"mod_a.py": "def one():\n    return 1\n", "mod_b.py": "TWO = 2\n"})
    monkeypatch.setattr(codeqa, "_stdlib_root", lambda: root)
    caches = (codeqa._stdlib_packages, codeqa._stdlib_modules, codeqa._stdlib_corpus)
    for cached in caches:
        cached.cache_clear()
    yield root
    for cached in caches:
        cached.cache_clear()


def test_stdlib_candidate_policy(fake_stdlib: Path) -> None:
    packages = codeqa._stdlib_packages()
    assert sorted(packages) == ["alpha", "beta", "delta", "epsilon", "gamma"]
    assert [f.path for f in packages["gamma"]] == ["gamma/__init__.py"]
    size = {name: sum(f.tokens for f in files) for name, files in packages.items()}
    assert size["alpha"] < size["beta"]
    modules = sum(f.tokens for f in codeqa._stdlib_modules())

    # (a) a whole package of 80-100% of the length; (b) larger packages trimmed to it;
    # (c) whole packages, largest first, while they fit, then top-level modules.
    candidates = list(codeqa._stdlib_candidates(size["alpha"]))
    assert [label for label, _ in candidates] == [
        "stdlib:alpha",
        "stdlib:beta (trimmed)",
        "stdlib:alpha+gamma + 0 modules",
    ]
    assert all(sum(f.tokens for f in files) <= size["alpha"] for _, files in candidates)

    ((label, files),) = codeqa._stdlib_candidates(sum(size.values()) + modules)
    assert label == "stdlib:5 packages + 2 modules"
    paths = {f.path for f in files}
    assert {"mod_a.py", "mod_b.py", "alpha/base.py", "beta/extra.py", "delta/__init__.py"} <= paths
    assert not any(p.startswith(("test/", "encodings/", "notes/")) for p in paths)
    assert "gamma/tests/test_a.py" not in paths

    corpus = codeqa._stdlib_corpus(size["alpha"])
    assert corpus.label == "stdlib:alpha"
    assert "alpha/circle.py" in corpus.files
    items = CodeQATask().items(size["alpha"], 2, seed=0)
    assert items[0].meta["source"] == "stdlib:alpha"
    assert items[0].context == corpus.files


def test_stdlib_trims_larger_packages_fullest_first(fake_stdlib: Path) -> None:
    packages = codeqa._stdlib_packages()
    budget = sum(f.tokens for f in packages["alpha"]) // 2
    candidates = list(codeqa._stdlib_candidates(budget))
    labels = [label for label, _ in candidates]
    # Both trims hold the same files here, so the tie goes by name.
    assert labels[:2] == ["stdlib:alpha (trimmed)", "stdlib:beta (trimmed)"]
    fills = [sum(f.tokens for f in files) for _, files in candidates]
    assert all(fill <= budget for fill in fills)
    assert fills[0] >= fills[1]


def test_real_stdlib_at_8k_tokens() -> None:
    items = CodeQATask().items(2**13, 3, seed=0)
    for item in items:
        assert isinstance(item.context, dict)
        assert item.meta["source"].startswith("stdlib:")
        assert 0.5 * 2**13 <= item.meta["context_tokens"] <= 2**13
        assert all(path.endswith(".py") for path in item.context)
        assert item.gold in "ABCD"
