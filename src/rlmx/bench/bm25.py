"""Okapi BM25 over text chunks, in pure Python: the retriever of the ``rag`` baseline.

``BM25Index(chunks).top_k(query, k)`` returns ``(chunk index, score)`` pairs, best first. Text is
lowercased and split into runs of letters, digits and underscores; a short list of English
stopwords is dropped. The index keeps postings lists, so a query only touches the chunks that
share a term with it (a corpus of ~10K chunks answers in milliseconds).

Scoring is classic Okapi BM25 with the non-negative IDF ``ln(1 + (N - df + 0.5) / (df + 0.5))``
(as in Lucene), so a term present in most chunks still counts a little instead of subtracting.
Repeated query terms count once per occurrence.
"""

from __future__ import annotations

import heapq
import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Final

from rlmx.exceptions import ConfigError

__all__ = ["STOPWORDS", "BM25Index", "tokenize"]

_STOPWORD_TEXT: Final = (
    "a an and are as at be been but by did do does for from had has have he her his how i "
    "if in into is it its me my no not of on or our she so than that the their them then "
    "there these they this to was we were what when where which who whom why will with you "
    "your"
)
STOPWORDS: Final = frozenset(_STOPWORD_TEXT.split())
"""Common English words that carry no topic, left out of the index and of queries."""

_WORD = re.compile(r"\w+")


def tokenize(text: str) -> list[str]:
    """Lowercase word tokens of ``text``, stopwords removed."""
    return [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


class BM25Index:
    """An Okapi BM25 index over ``chunks`` (``k1`` = 1.5, ``b`` = 0.75 by default)."""

    def __init__(self, chunks: Sequence[str], *, k1: float = 1.5, b: float = 0.75) -> None:
        if k1 < 0:
            raise ConfigError(f"BM25 k1 must be zero or more, not {k1}")
        if not 0 <= b <= 1:
            raise ConfigError(f"BM25 b must be between 0 and 1, not {b}")
        self.k1 = k1
        self.b = b
        self.size = len(chunks)
        self._postings: defaultdict[str, list[tuple[int, int]]] = defaultdict(list)
        self._lengths: list[int] = []
        for position, chunk in enumerate(chunks):
            terms = tokenize(chunk)
            self._lengths.append(len(terms))
            for term, frequency in Counter(terms).items():
                self._postings[term].append((position, frequency))
        total = sum(self._lengths)
        self._average_length = total / self.size if self.size and total else 1.0
        self._idf = {
            term: math.log(1 + (self.size - len(posts) + 0.5) / (len(posts) + 0.5))
            for term, posts in self._postings.items()
        }

    def scores(self, query: str) -> dict[int, float]:
        """BM25 score of every chunk sharing at least one term with ``query``."""
        totals: defaultdict[int, float] = defaultdict(float)
        k1, b = self.k1, self.b
        for term in tokenize(query):
            posts = self._postings.get(term)
            if not posts:
                continue
            idf = self._idf[term]
            for position, frequency in posts:
                norm = k1 * (1 - b + b * self._lengths[position] / self._average_length)
                totals[position] += idf * frequency * (k1 + 1) / (frequency + norm)
        return dict(totals)

    def top_k(self, query: str, k: int) -> list[tuple[int, float]]:
        """The ``k`` best chunks for ``query`` as ``(index, score)``, best first.

        Only chunks sharing a term with the query are returned, so fewer than ``k`` come back
        when fewer match (none for an empty or all-stopword query). Ties go to the earlier chunk.
        """
        if k < 1:
            raise ConfigError(f"k must be at least 1 chunk, not {k}")
        scored = self.scores(query)
        best = heapq.nsmallest(k, scored.items(), key=lambda pair: (-pair[1], pair[0]))
        return [(position, score) for position, score in best]
