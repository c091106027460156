"""OOLONG-synth's official items, read from a user's export of ``oolongbench/oolong-synth``.

The ``oolong`` task normally rebuilds OOLONG-synth's ``trec_coarse`` windows offline
(:mod:`rlmx.bench.oolong`). Users who have the published dataset pass its files instead
(``rlmx bench oolong --data PATH``), so their scores are computed on the very questions the
published numbers were measured on.

Record schema. Each record is one question over one context window, with the columns OOLONG's
own code writes (``src/data_gen/oolong-synth/generate_dataset.py`` and the ``datasets`` schema in
``subsample.py`` of github.com/abertsch72/oolong) and its scorer reads
(``synth_process_response`` in ``src/eval/eval_helpers.py``):

- ``id`` (int): the question's id; ``context_len`` (int): the window's nominal length in tokens,
  a power of two; ``dataset`` (str): the source ICL data set, e.g. ``trec_coarse``;
- ``context_window_text`` (str): the window the model sees; ``question`` (str), ending with the
  answer format it asks for;
- ``answer`` (str): the gold, a Python literal of a list: ``"['entity']"``, ``"[12]"``,
  ``"['more common than']"``, ``"['June 2024']"``, or ``"[datetime.date(2024, 6, 16)]"`` for
  dates; the official scorer compares against its first element only;
- ``answer_type`` (str): ``ANSWER_TYPE.LABEL``, ``.NUMERIC``, ``.COMPARISON``, ``.USER``,
  ``.DATE`` or ``.MONTH_YEAR``;
- optional: ``task_group`` (``counting`` / ``user`` / ``timeline``), ``task``
  (``TASK_TYPE.MOST_FREQ``...), ``context_window_id``, ``input_subset``, ``num_labels``, and
  ``context_window_text_with_labels`` (the gold labels; never read here).

In the published dataset ``trec_coarse`` (with ``spam``) is in the ``validation`` split; the
other eight data sets are in ``test``.

Files. JSON Lines (``.jsonl``, ``.ndjson``; also ``.json`` holding one object per line, which is
what ``datasets``' ``to_json`` writes), a JSON array of records (``.json``; also an object holding
the array under ``data``, ``rows`` or ``records``, an object of split name -> records, or an
object of equal-length columns), or Parquet (``.parquet``, the dataset's own format; needs
``pyarrow``, which rlmx does not depend on). A folder is read file by file, in name order.

Scoring. Each item's ``gold`` is the first element of ``answer`` as text (dates as
``MM/DD/YYYY``) and ``meta["kind"]`` the answer kind :func:`rlmx.bench.scoring.oolong_score`
takes, so :class:`OolongOfficialTask`, :func:`score_official` and
:meth:`rlmx.bench.oolong.OolongTask.score` all score it the same way.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from rlmx.bench.base import BenchItem
from rlmx.bench.scoring import oolong_score, parse_date, parse_month_year
from rlmx.exceptions import ConfigError

__all__ = [
    "ANSWER_KINDS",
    "OPTIONAL_FIELDS",
    "REQUIRED_FIELDS",
    "SUFFIXES",
    "OolongOfficialTask",
    "is_official_data",
    "load_oolong_official",
    "official_gold",
    "official_kind",
    "score_official",
]

REQUIRED_FIELDS = (
    "id",
    "context_len",
    "dataset",
    "context_window_text",
    "question",
    "answer",
    "answer_type",
)
"""The fields every OOLONG-synth record must have."""

OPTIONAL_FIELDS = ("task_group", "task", "context_window_id", "input_subset", "num_labels")
"""Fields copied to an item's ``meta`` when present."""

ANSWER_KINDS: Mapping[str, str] = {
    "LABEL": "label",
    "NUMERIC": "number",
    "COMPARISON": "comparison",
    "USER": "user",
    "DATE": "date",
    "MONTH_YEAR": "month_year",
}
"""OOLONG's ``ANSWER_TYPE.*`` names -> the kinds :func:`rlmx.bench.scoring.oolong_score` takes."""

SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet")
"""File name endings read as OOLONG records."""

_WRAPPER_KEYS = ("data", "rows", "records")
_DATETIME_GOLD = re.compile(
    r"^\s*\[?\s*datetime\.date\(\s*(\d{4})\s*,\s*(\d{1,2})\s*,\s*(\d{1,2})\s*\)"
)
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")
_INTEGER = re.compile(r"[+-]?\d+")


def official_kind(answer_type: str) -> str:
    """The :func:`~rlmx.bench.scoring.oolong_score` kind of an OOLONG ``answer_type``.

    Accepts ``ANSWER_TYPE.NUMERIC`` as the dataset writes it, and ``NUMERIC`` / ``numeric``.
    """
    name = answer_type.strip().upper().removeprefix("ANSWER_TYPE.")
    if name not in ANSWER_KINDS:
        known = ", ".join(f"ANSWER_TYPE.{key}" for key in ANSWER_KINDS)
        raise ConfigError(f"Unknown OOLONG answer_type {answer_type!r}; expected one of {known}.")
    return ANSWER_KINDS[name]


def _format_date(day: date) -> str:
    return f"{day.month:02d}/{day.day:02d}/{day.year}"


def _first_value(answer: object) -> object:
    """The first gold value of an ``answer`` field, as OOLONG's scorer takes it."""
    if isinstance(answer, list | tuple):
        if not answer:
            raise ConfigError("the answer list is empty")
        return answer[0]
    if not isinstance(answer, str):
        return answer
    found = _DATETIME_GOLD.match(answer)
    if found:
        year, month, day = (int(part) for part in found.groups())
        try:
            return date(year, month, day)
        except ValueError:
            raise ConfigError(f"the answer {answer!r} is not a valid date") from None
    try:
        value = ast.literal_eval(answer.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return answer  # a bare gold such as "entity" or "June 2024"
    if isinstance(value, list | tuple):
        if not value:
            raise ConfigError(f"the answer {answer!r} is an empty list")
        return value[0]
    return value if isinstance(value, str | int | float) else answer


def _as_text(value: object) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, date):
        return _format_date(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def official_gold(answer: object, kind: str) -> str:
    """The gold text :func:`~rlmx.bench.scoring.oolong_score` compares against.

    ``answer`` is the record's field: a Python list literal (``"['entity']"``, ``"[12]"``,
    ``"[datetime.date(2024, 6, 16)]"``), an actual list, or a bare value. Like the official
    scorer, only the first element counts. Dates become ``MM/DD/YYYY``. A gold that cannot be
    scored as ``kind`` (a non-integer count, an unreadable date) raises
    :class:`~rlmx.exceptions.ConfigError`.
    """
    gold = _as_text(_first_value(answer))
    if not gold:
        raise ConfigError(f"the answer {answer!r} is empty")
    if kind == "number" and not _INTEGER.fullmatch(gold):
        raise ConfigError(f"the answer {answer!r} of a NUMERIC question is not an integer")
    if kind == "date":
        day = parse_date(gold)
        if day is None:
            raise ConfigError(f"the answer {answer!r} of a DATE question is not a date")
        gold = _format_date(day)
    if kind == "month_year" and parse_month_year(gold) is None:
        raise ConfigError(f"the answer {answer!r} of a MONTH_YEAR question is not a month")
    return gold


def score_official(item: BenchItem, answer: str) -> float:
    """OOLONG's per-question score of ``answer`` for an item of :func:`load_oolong_official`."""
    return oolong_score(answer, str(item.gold), str(item.meta["kind"]))


def is_official_data(path: str | Path) -> bool:
    """Whether ``path`` names OOLONG record files rather than TREC ``.label`` data.

    Decided by name only (nothing is read): a file ending in one of :data:`SUFFIXES`, or a
    folder holding such a file.
    """
    target = Path(path)
    if target.is_dir():
        return any(_is_record_file(child) for child in target.iterdir())
    return target.name.lower().endswith(SUFFIXES)


def _is_record_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(SUFFIXES)


# --------------------------------------------------------------------------------------------
# Reading records


@dataclass(slots=True)
class _Scan:
    """The records a scan kept, and every ``(dataset, context_len)`` it saw with its count."""

    kept: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    seen: Counter[tuple[str, int]] = field(default_factory=Counter)


def _lookup(record: Mapping[str, Any], name: str) -> Any:
    return record.get(name)


def _expected() -> str:
    return ", ".join(REQUIRED_FIELDS)


def _check_fields(where: str, record: object) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise ConfigError(
            f"{where} is not a JSON object; OOLONG-synth records are objects with the fields "
            f"{_expected()}."
        )
    missing = [name for name in REQUIRED_FIELDS if _lookup(record, name) is None]
    if missing:
        raise ConfigError(
            f"{where} is not an OOLONG-synth record: it lacks {', '.join(missing)} (expected the "
            f"fields {_expected()}, as in the oolongbench/oolong-synth dataset)."
        )
    return record


def _context_len(where: str, value: object) -> int:
    if isinstance(value, bool):
        value = None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{where}: context_len must be a positive token count, not {value!r}.")
    return value


def _keep(
    scan: _Scan,
    where: str,
    record: object,
    dataset: str | None,
    context_len: int | None,
) -> None:
    checked = _check_fields(where, record)
    name = str(_lookup(checked, "dataset"))
    length = _context_len(where, _lookup(checked, "context_len"))
    scan.seen[(name, length)] += 1
    if (dataset is None or name == dataset) and (context_len is None or length == context_len):
        scan.kept.append((where, checked))


def _json_lines(file: Path, lines: Iterator[str]) -> Iterator[tuple[str, object]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{file.name} line {number}"
        try:
            yield where, json.loads(line)
        except json.JSONDecodeError as error:
            raise ConfigError(
                f"{where} is not valid JSON ({error}); OOLONG files are JSON Lines, a JSON "
                "array of records, or Parquet."
            ) from None


def _json_document(file: Path, text: str) -> Iterator[tuple[str, object]]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        if error.msg == "Extra data" and text.lstrip().startswith("{"):
            yield from _json_lines(file, iter(text.splitlines()))  # one object per line
            return
        raise ConfigError(
            f"{file.name} is not valid JSON ({error}); OOLONG files are JSON Lines, a JSON "
            "array of records, or Parquet."
        ) from None
    if isinstance(document, dict):
        wrapped = [key for key in _WRAPPER_KEYS if isinstance(document.get(key), list)]
        splits = list(document.values())
        if wrapped:
            document = document[wrapped[0]]
        elif splits and all(
            isinstance(split, list) and split and all(isinstance(row, dict) for row in split)
            for split in splits
        ):  # {"validation": [...], "test": [...]}: the splits one after the other
            document = [row for split in splits for row in split]
        elif splits and all(isinstance(column, list) for column in splits):
            columns = list(document.values())
            if len({len(column) for column in columns}) != 1:
                raise ConfigError(
                    f"{file.name} holds columns of different lengths; expected one record per row."
                )
            names = list(document)
            document = [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
        else:
            document = [document]
    if not isinstance(document, list):
        raise ConfigError(
            f"{file.name} holds a JSON {type(document).__name__}, not OOLONG-synth records; "
            f"expected objects with the fields {_expected()}."
        )
    for index, record in enumerate(document):
        yield f"{file.name} record {index}", record


def _scan_json(file: Path, scan: _Scan, dataset: str | None, context_len: int | None) -> None:
    try:
        if file.name.lower().endswith((".jsonl", ".ndjson")):
            with file.open(encoding="utf-8") as stream:
                for where, record in _json_lines(file, stream):
                    _keep(scan, where, record, dataset, context_len)
            return
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{file.name} is not UTF-8 text ({error}).") from None
    for where, record in _json_document(file, text):
        _keep(scan, where, record, dataset, context_len)


def _parquet_module() -> Any:
    try:
        return importlib.import_module("pyarrow.parquet")
    except ImportError:
        raise ConfigError(
            "Reading OOLONG's Parquet files needs pyarrow (pip install pyarrow), which rlmx "
            "does not install; or export the split to JSON Lines, e.g. with the datasets "
            "library: load_dataset('oolongbench/oolong-synth', split='validation')"
            ".to_json('oolong-synth-validation.jsonl')."
        ) from None


def _scan_parquet(file: Path, scan: _Scan, dataset: str | None, context_len: int | None) -> None:
    parquet = _parquet_module()
    try:
        names = set(parquet.read_schema(file).names)
        missing = [name for name in REQUIRED_FIELDS if name not in names]
        if missing:
            raise ConfigError(
                f"{file.name} has no column {', '.join(missing)}; OOLONG-synth files have the "
                f"columns {_expected()}."
            )
        summary = parquet.read_table(file, columns=["dataset", "context_len"]).to_pylist()
        filters: list[tuple[str, str, object]] = []
        if dataset is not None:
            filters.append(("dataset", "==", dataset))
        if context_len is not None:
            filters.append(("context_len", "==", context_len))
        table = parquet.read_table(file, filters=filters or None)
        records = table.to_pylist()
    except ConfigError:
        raise
    except Exception as error:  # pyarrow's errors have no common importable base here
        raise ConfigError(f"cannot read Parquet file {file.name}: {error}") from None
    for row in summary:
        scan.seen[(str(row["dataset"]), _context_len(file.name, row["context_len"]))] += 1
    for index, record in enumerate(records):
        where = f"{file.name} row {index}"
        checked = _check_fields(where, record)
        _context_len(where, _lookup(checked, "context_len"))
        scan.kept.append((where, checked))


def _record_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(child for child in path.iterdir() if _is_record_file(child))
        if not files:
            raise ConfigError(
                f"{str(path)!r} holds no OOLONG-synth files (names ending in "
                f"{', '.join(SUFFIXES)})."
            )
        return files
    if not path.is_file():
        raise ConfigError(
            f"OOLONG data {str(path)!r} does not exist; pass an export of "
            "oolongbench/oolong-synth (.jsonl, .json or .parquet) or a folder of them."
        )
    return [path]


def _scan(path: Path, dataset: str | None, context_len: int | None) -> _Scan:
    scan = _Scan()
    for file in _record_files(path):
        try:
            if file.name.lower().endswith(".parquet"):
                _scan_parquet(file, scan, dataset, context_len)
            else:
                _scan_json(file, scan, dataset, context_len)
        except OSError as error:
            raise ConfigError(f"cannot read OOLONG data {str(file)!r}: {error}") from None
    return scan


def _describe(seen: Counter[tuple[str, int]]) -> str:
    by_dataset: dict[str, list[str]] = {}
    for (name, length), count in sorted(seen.items()):
        by_dataset.setdefault(name, []).append(f"{length} ({count})")
    return "; ".join(f"{name} at {', '.join(lengths)}" for name, lengths in by_dataset.items())


# --------------------------------------------------------------------------------------------
# Items


def _item_id(record_id: object) -> str:
    text = _UNSAFE_ID.sub("_", str(record_id).strip()).strip("_")
    return f"oolong-official-{text or 'unnamed'}"


def _to_item(where: str, record: Mapping[str, Any], contexts: dict[str, str]) -> BenchItem:
    text = _lookup(record, "context_window_text")
    question = _lookup(record, "question")
    if not isinstance(text, str) or not isinstance(question, str):
        raise ConfigError(f"{where}: context_window_text and question must be strings.")
    answer_type = str(_lookup(record, "answer_type"))
    try:
        kind = official_kind(answer_type)
        gold = official_gold(_lookup(record, "answer"), kind)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    record_id = _lookup(record, "id")
    meta: dict[str, Any] = {
        "source": "oolong-synth",
        "record_id": record_id,
        "dataset": str(_lookup(record, "dataset")),
        "kind": kind,
        "answer_type": answer_type,
        "answer_raw": _lookup(record, "answer"),
    }
    for name in OPTIONAL_FIELDS:
        value = _lookup(record, name)
        if value is not None:
            meta[name] = value
    if "task_group" in meta:
        meta["family"] = meta["task_group"]  # the name the generated items use
    if "task" in meta:
        meta["question_type"] = meta["task"]
    return BenchItem(
        task="oolong",
        item_id=_item_id(record_id),
        context=contexts.setdefault(text, text),  # one copy per window, however many questions
        question=question,
        gold=gold,
        length=_context_len(where, _lookup(record, "context_len")),
        meta=meta,
    )


def load_oolong_official(
    path: str | Path,
    *,
    dataset: str | None = "trec_coarse",
    context_len: int | None = None,
) -> list[BenchItem]:
    """Items from OOLONG-synth files, in file order, filtered by data set and length.

    ``dataset`` is the record's ``dataset`` (``None``: any); ``context_len`` its nominal length
    in tokens (``None``: any). Each item's ``item_id`` is ``oolong-official-{id}``, ``length``
    the record's ``context_len``, ``context`` its ``context_window_text`` and ``question`` its
    question; ``meta`` holds the answer kind, ``answer_type``, ``task_group`` (also as
    ``family``), ``task`` and the window id. A missing path, a file that is not OOLONG-synth
    records, a gold that cannot be scored, a repeated id, or no record passing the filters
    raises :class:`~rlmx.exceptions.ConfigError`.
    """
    source = Path(path)
    scan = _scan(source, dataset, context_len)
    if not scan.seen:
        raise ConfigError(f"{str(source)!r} holds no OOLONG-synth records.")
    if not scan.kept:
        wanted = [
            f"dataset {dataset!r}" if dataset is not None else "",
            f"context_len {context_len}" if context_len is not None else "",
        ]
        raise ConfigError(
            f"{str(source)!r} has no record with {' and '.join(w for w in wanted if w)}; "
            f"it has: {_describe(scan.seen)}."
        )
    contexts: dict[str, str] = {}
    items: list[BenchItem] = []
    first_seen: dict[str, str] = {}
    for where, record in scan.kept:
        item = _to_item(where, record, contexts)
        if item.item_id in first_seen:
            raise ConfigError(
                f"{where} repeats the id {item.meta['record_id']!r} of "
                f"{first_seen[item.item_id]}; each OOLONG-synth question has its own id."
            )
        first_seen[item.item_id] = where
        items.append(item)
    return items


class OolongOfficialTask:
    """The ``oolong`` benchmark over a user's OOLONG-synth files instead of generated windows.

    ``items(length, n, seed)`` is the first ``n`` records of ``dataset`` (default
    ``trec_coarse``) whose ``context_len`` is ``length``, in file order; ``seed`` is unused,
    since the published items are fixed. Asking for more items than the file has at that
    length raises :class:`~rlmx.exceptions.ConfigError`. Scores are OOLONG's per-question
    scores (:func:`score_official`).
    """

    name = "oolong"

    def __init__(self, path: str | Path, *, dataset: str | None = "trec_coarse") -> None:
        self.path = Path(path)
        self.dataset = dataset
        self._by_length: dict[int, list[BenchItem]] = {}

    def items(self, length: int, n: int, seed: int) -> list[BenchItem]:
        """The first ``n`` records of ``length`` tokens (``seed`` is ignored)."""
        del seed  # the published items are fixed; there is nothing to draw
        if n < 0:
            raise ConfigError(f"The number of items must be 0 or more, not {n}.")
        if length not in self._by_length:
            self._by_length[length] = load_oolong_official(
                self.path, dataset=self.dataset, context_len=length
            )
        found = self._by_length[length]
        if len(found) < n:
            raise ConfigError(
                f"{str(self.path)!r} has {len(found)} {self.dataset or 'OOLONG'} records of "
                f"length {length}, fewer than the {n} asked for; pass --n {len(found)}."
            )
        return found[:n]

    def score(self, item: BenchItem, answer: str) -> float:
        """OOLONG's official per-question score of ``answer``."""
        return score_official(item, answer)
