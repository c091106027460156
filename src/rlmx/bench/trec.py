"""TREC question classification data (Li & Roth, 2002): the source rows of OOLONG-synth's
``trec_coarse`` split, which the OOLONG and OOLONG-Pairs benchmarks are built from.

:func:`load_trec` reads the official ``.label`` files (``COARSE:fine question text ?``) from a
path, from the folder named by ``RLMX_TREC_PATH``, or downloads them once into
``~/.cache/rlmx/trec/``; :func:`builtin_trec` is a small made-up labelled set for tests and
offline demos. Each coarse class maps to the OOLONG label name the questions use.
"""

from __future__ import annotations

import http.client
import os
import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from rlmx.exceptions import ConfigError

__all__ = [
    "COARSE_TO_LABEL",
    "OOLONG_LABELS",
    "TREC_FILES",
    "TREC_PATH_ENV",
    "TREC_URLS",
    "TrecQuestion",
    "builtin_trec",
    "default_trec_cache",
    "load_trec",
    "parse_trec",
    "parse_trec_line",
]

COARSE_TO_LABEL = {
    "ABBR": "abbreviation",
    "DESC": "description and abstract concept",
    "ENTY": "entity",
    "HUM": "human being",
    "LOC": "location",
    "NUM": "numeric value",
}
"""TREC coarse class -> the OOLONG label name."""

OOLONG_LABELS = (
    "abbreviation",
    "entity",
    "description and abstract concept",
    "human being",
    "location",
    "numeric value",
)
"""The six labels, in the order the benchmark lists them."""

TREC_FILES = ("train_5500.label", "TREC_10.label")
"""The training set (required) and the test set (read too when present)."""

TREC_URLS = {name: f"https://cogcomp.seas.upenn.edu/Data/QA/QC/{name}" for name in TREC_FILES}
"""Where the files are published."""

TREC_PATH_ENV = "RLMX_TREC_PATH"
"""Environment variable naming a TREC ``.label`` file or the folder holding them."""

_DOWNLOAD_TIMEOUT_S = 30.0
_LINE = re.compile(r"([A-Z]+):(\S+)\s+(\S.*)")


@dataclass(frozen=True, slots=True)
class TrecQuestion:
    """One TREC question and its OOLONG label (e.g. ``"location"``)."""

    text: str
    label: str


def parse_trec_line(line: str, where: str = "TREC data") -> TrecQuestion | None:
    """The question on one ``COARSE:fine question text ?`` line; None for a blank line.

    ``where`` names the line in the error raised for a malformed one.
    """
    stripped = line.strip()
    if not stripped:
        return None
    found = _LINE.fullmatch(stripped)
    if found is None or found.group(1) not in COARSE_TO_LABEL:
        raise ConfigError(
            f"{where}: expected 'COARSE:fine question ?' with COARSE one of "
            f"{', '.join(COARSE_TO_LABEL)}, got {stripped[:80]!r}. "
            "Pass the original train_5500.label / TREC_10.label files."
        )
    return TrecQuestion(" ".join(found.group(3).split()), COARSE_TO_LABEL[found.group(1)])


def parse_trec(text: str, source: str = "TREC data") -> list[TrecQuestion]:
    """Every question in the text of a ``.label`` file, in file order."""
    questions = []
    for number, line in enumerate(text.splitlines(), start=1):
        question = parse_trec_line(line, f"{source}, line {number}")
        if question is not None:
            questions.append(question)
    if not questions:
        raise ConfigError(f"{source} holds no TREC questions; pass a non-empty .label file.")
    return questions


def _decode(data: bytes) -> str:
    # The published files are mostly ASCII with a few Latin-1 bytes.
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _read_file(path: Path) -> list[TrecQuestion]:
    return parse_trec(_decode(path.read_bytes()), str(path))


def _read_folder(folder: Path) -> list[TrecQuestion]:
    train = folder / TREC_FILES[0]
    if not train.is_file():
        raise ConfigError(
            f"{folder} does not hold {TREC_FILES[0]}; pass the folder with the TREC .label "
            "files, or one .label file."
        )
    questions = _read_file(train)
    test = folder / TREC_FILES[1]
    if test.is_file():
        questions.extend(_read_file(test))
    return questions


def default_trec_cache() -> Path:
    """Where downloaded TREC files are kept: ``~/.cache/rlmx/trec``."""
    return Path.home() / ".cache" / "rlmx" / "trec"


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
        data: bytes = response.read()
    return data


def _download(folder: Path) -> Path:
    """Download the TREC files into ``folder`` unless the training set is already there.

    The test set is best-effort: once the training set is cached, nothing is fetched again.
    """
    if (folder / TREC_FILES[0]).is_file():
        return folder
    for name in TREC_FILES:
        url = TREC_URLS[name]
        try:
            data = _fetch(url)
            parse_trec(_decode(data), url)
        except (OSError, http.client.HTTPException, ConfigError) as error:
            if name != TREC_FILES[0]:
                continue
            raise ConfigError(
                f"Could not download the TREC questions from {url} ({error}). "
                f"Pass them instead: a folder holding {TREC_FILES[0]} (and {TREC_FILES[1]}), or "
                f"one .label file, as the path argument or in the {TREC_PATH_ENV} environment "
                f"variable; or put the files in {folder}."
            ) from error
        target = folder / name
        partial = target.with_suffix(".part")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            partial.write_bytes(data)
            partial.replace(target)
        except OSError as error:
            raise ConfigError(
                f"Could not save the downloaded TREC questions in {folder} ({error}). Pass a "
                f"writable cache_dir, or the path of the downloaded files via {TREC_PATH_ENV}."
            ) from error
    return folder


def load_trec(
    path: str | Path | None = None, *, cache_dir: Path | None = None
) -> list[TrecQuestion]:
    """The TREC questions with their OOLONG labels.

    ``path`` is a ``.label`` file or a folder holding ``train_5500.label`` (and
    ``TREC_10.label``, appended when present). Without it, ``$RLMX_TREC_PATH`` is used; without
    that, the files are downloaded from :data:`TREC_URLS` into ``cache_dir`` (default
    :func:`default_trec_cache`) unless already there.
    """
    if path is None:
        path = os.environ.get(TREC_PATH_ENV) or None
    if path is None:
        return _read_folder(_download(cache_dir or default_trec_cache()))
    location = Path(path).expanduser()
    if location.is_dir():
        return _read_folder(location)
    if location.is_file():
        return _read_file(location)
    raise ConfigError(
        f"TREC data not found at {location}: pass a .label file or a folder holding "
        f"{TREC_FILES[0]}."
    )


# Made-up questions in the TREC format, ten per coarse class; enough to build small windows
# without the real data.
_BUILTIN = """\
ABBR:exp What does the abbreviation UNESCO stand for ?
ABBR:exp What does RSVP mean at the end of an invitation ?
ABBR:abb What is the abbreviation for kilogram ?
ABBR:exp What is the full form of GPS ?
ABBR:exp What do the letters PIN stand for in PIN code ?
ABBR:abb What is the short form of the word laboratory ?
ABBR:exp What does DNA stand for ?
ABBR:exp What is the meaning of the acronym LASER ?
ABBR:abb What abbreviation is used for the month of September ?
ABBR:exp What does the C in CPU stand for ?
DESC:def What is a glacier ?
DESC:reason Why do leaves change colour in autumn ?
DESC:manner How does a compass needle find north ?
DESC:def What is photosynthesis ?
DESC:reason Why is the sea salty ?
DESC:manner How do bees make honey ?
DESC:def What is the meaning of the word nostalgia ?
DESC:desc What happens when a star runs out of fuel ?
DESC:reason Why do cats purr ?
DESC:manner How is paper recycled ?
ENTY:animal What animal is known as the ship of the desert ?
ENTY:food What fruit is used to make guacamole ?
ENTY:instru What instrument has 88 keys ?
ENTY:sport What sport is played at Wimbledon ?
ENTY:color What colour do you get by mixing blue and yellow ?
ENTY:plant What tree produces acorns ?
ENTY:lang What language is spoken in Brazil ?
ENTY:currency What currency is used in Japan ?
ENTY:dismed What disease is caused by a lack of vitamin C ?
ENTY:cremat What novel begins with the line Call me Ishmael ?
HUM:ind Who painted the Mona Lisa ?
HUM:ind Who was the first person to walk on the Moon ?
HUM:gr What band recorded the album Abbey Road ?
HUM:ind Who wrote the play Romeo and Juliet ?
HUM:ind Who discovered penicillin ?
HUM:gr What team won the first football World Cup ?
HUM:ind Who invented the telephone ?
HUM:title What was the title of the rulers of ancient Egypt ?
HUM:ind Who composed The Four Seasons ?
HUM:desc Who was Marie Curie ?
LOC:city What is the capital of Canada ?
LOC:country Which country has the largest population in South America ?
LOC:mount What is the highest mountain in Africa ?
LOC:other Where is the Great Barrier Reef ?
LOC:other What river flows through Cairo ?
LOC:city In which city is the Eiffel Tower ?
LOC:state Which US state is known as the Sunshine State ?
LOC:other Where do penguins live in the wild ?
LOC:country What country is home to the kangaroo ?
LOC:other What ocean lies between Africa and Australia ?
NUM:count How many legs does a spider have ?
NUM:date When did the Berlin Wall fall ?
NUM:dist How far is the Moon from the Earth ?
NUM:temp At what temperature does water boil ?
NUM:count How many players are on a soccer team ?
NUM:date What year did the Titanic sink ?
NUM:speed How fast does sound travel in air ?
NUM:money How much does a first-class stamp cost ?
NUM:period How long does light from the Sun take to reach Earth ?
NUM:weight How much does an adult elephant weigh ?
"""


def builtin_trec() -> list[TrecQuestion]:
    """Sixty made-up general-knowledge questions, ten per label, in the TREC format: a stand-in
    for the real data in tests and offline examples (scores on it mean nothing)."""
    return parse_trec(_BUILTIN, "built-in TREC sample")
