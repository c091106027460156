"""Okapi BM25 retrieval over text chunks."""

from __future__ import annotations

import math
import random
import time

import pytest

from rlmx.bench.bm25 import STOPWORDS, BM25Index, tokenize
from rlmx.exceptions import ConfigError

CORPUS = [
    "The cat sat on the mat near the old wooden door.",  # 0
    "Dogs chase cats; a cat runs up the tree and the cat hides.",  # 1
    "Quarterly revenue grew by ten percent in the northern region.",  # 2
    "The dog barked at the mailman all morning long, and the neighbours complained about "
    "the noise for hours while the mailman kept walking down the street.",  # 3
    "A dog sleeps.",  # 4
]


def test_tokenize_lowercases_and_drops_stopwords() -> None:
    assert tokenize("The Cat, the HAT and user_id 42!") == ["cat", "hat", "user_id", "42"]
    assert tokenize("") == []
    assert {"the", "and", "of"} <= STOPWORDS


def test_ranking_on_a_small_corpus() -> None:
    index = BM25Index(CORPUS)
    ranked = [i for i, _ in index.top_k("cat", 5)]
    # Chunk 1 says "cat" twice; "cats" is another word.
    assert ranked == [1, 0]
    assert index.top_k("revenue growth region", 1)[0][0] == 2
    dogs = index.top_k("dog", 5)
    # Same term frequency: the shorter chunk ranks first.
    assert [i for i, _ in dogs] == [4, 3]
    assert dogs[0][1] > dogs[1][1] > 0


def test_scores_match_the_okapi_formula() -> None:
    chunks = ["apple banana apple", "banana cherry", "cherry cherry date"]
    index = BM25Index(chunks, k1=1.2, b=0.5)
    average = (3 + 2 + 3) / 3

    def term(tf: int, df: int, length: int) -> float:
        idf = math.log(1 + (3 - df + 0.5) / (df + 0.5))
        return idf * tf * 2.2 / (tf + 1.2 * (1 - 0.5 + 0.5 * length / average))

    scores = index.scores("apple cherry")
    assert scores[0] == pytest.approx(term(2, 1, 3))
    assert scores[1] == pytest.approx(term(1, 2, 2))
    assert scores[2] == pytest.approx(term(2, 2, 3))
    # A repeated query term counts once per occurrence.
    assert index.scores("apple apple")[0] == pytest.approx(2 * term(2, 1, 3))


def test_k_larger_than_the_corpus_returns_every_match() -> None:
    index = BM25Index(CORPUS)
    results = index.top_k("the dog and the cat", 50)
    assert sorted(i for i, _ in results) == [0, 1, 3, 4]
    assert [s for _, s in results] == sorted((s for _, s in results), reverse=True)


def test_empty_and_stopword_queries_return_nothing() -> None:
    index = BM25Index(CORPUS)
    assert index.top_k("", 3) == []
    assert index.top_k("the and of", 3) == []
    assert index.top_k("zeppelin", 3) == []


def test_ties_go_to_the_earlier_chunk() -> None:
    index = BM25Index(["same words", "other", "same words"])
    assert [i for i, _ in index.top_k("same", 2)] == [0, 2]


def test_empty_corpus_and_empty_chunks() -> None:
    assert BM25Index([]).top_k("anything", 3) == []
    index = BM25Index(["", "the and"])
    assert index.top_k("the", 3) == []


def test_bad_parameters() -> None:
    with pytest.raises(ConfigError, match="k must be at least 1"):
        BM25Index(CORPUS).top_k("cat", 0)
    with pytest.raises(ConfigError, match="k1"):
        BM25Index(CORPUS, k1=-1)
    with pytest.raises(ConfigError, match="b must be between"):
        BM25Index(CORPUS, b=1.5)


def test_ten_thousand_chunks_index_and_query_quickly() -> None:
    rng = random.Random(0)
    vocabulary = [f"word{i}" for i in range(5000)]
    chunks = [" ".join(rng.choices(vocabulary, k=60)) for _ in range(10_000)]
    chunks[1234] += " needle needle haystack"
    started = time.perf_counter()
    index = BM25Index(chunks)
    best = index.top_k("needle in the haystack word17", 10)
    elapsed = time.perf_counter() - started
    assert best[0][0] == 1234
    assert len(best) == 10
    assert elapsed < 2.0
