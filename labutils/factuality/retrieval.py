"""Retrieval over token documents: exact match and BM25 (Robertson & Zaragoza 2009, "The Probabilistic
Relevance Framework: BM25 and Beyond", Found. Trends Inf. Retr. 3(4), with the idf Lucene uses).

    score(D, Q) = Σ_{t ∈ Q} idf(t) · f(t, D)·(k1 + 1) / (f(t, D) + k1·(1 − b + b·|D| / avgdl))
    idf(t)      = ln(1 + (N − n_t + 0.5) / (n_t + 0.5))

with f(t, D) the count of token t in document D, |D| its length, avgdl the mean length, N the number
of documents and n_t how many contain t. Each *distinct* query token counts once. The ``1 +`` inside
the logarithm keeps every weight positive: Robertson's original idf, ln((N − n_t + 0.5)/(n_t + 0.5)),
turns negative for a token in more than half the documents, so matching it would *lower* a score.

Left out on purpose: stemming, stop words, query-term frequency (k3), any learned retriever.

    >>> docs = [[1, 2, 3], [2, 2, 4, 5], [6]]
    >>> [round(float(s), 4) for s in bm25_scores([2, 6], docs)]
    [0.4471, 0.5666, 1.3178]
"""

from __future__ import annotations

import numpy as np


def _check_tokens(name: str, tokens) -> list:
    if isinstance(tokens, np.ndarray):
        tokens = tokens.tolist()
    if not isinstance(tokens, (list, tuple)) or not all(
            isinstance(t, (int, np.integer)) and not isinstance(t, bool) and t >= 0 for t in tokens):
        raise ValueError(f"{name} must be a list of non-negative token ids, got {tokens!r:.80}")
    return [int(t) for t in tokens]


def _check_documents(documents) -> list:
    if not isinstance(documents, (list, tuple)) or not documents:
        raise ValueError(f"documents must be a non-empty list of token-id lists, got {type(documents).__name__}")
    docs = [_check_tokens(f"documents[{i}]", d) for i, d in enumerate(documents)]
    if all(len(d) == 0 for d in docs):
        raise ValueError("documents are all empty")
    return docs


class BM25Index:
    """BM25 over a fixed list of documents, precomputed once: ``.scores(query)`` for each query.

    Example: ``BM25Index(corpus.documents).top_k([e, a], 4)`` — the 4 best document indices.
    """

    def __init__(self, documents, *, k1: float = 1.2, b: float = 0.75):
        docs = _check_documents(documents)
        if not (isinstance(k1, (int, float)) and np.isfinite(k1) and k1 >= 0):
            raise ValueError(f"k1 must be a number >= 0, got {k1!r}")
        if not (isinstance(b, (int, float)) and 0 <= b <= 1):
            raise ValueError(f"b must be a number in [0, 1], got {b!r}")
        V = 1 + max(max(d) for d in docs if d)
        tf = np.zeros((len(docs), V), dtype=np.float64)  # (N, V) token counts per document
        for i, d in enumerate(docs):
            np.add.at(tf[i], d, 1.0)
        lengths = np.array([len(d) for d in docs], dtype=np.float64)  # (N,)
        n_t = (tf > 0).sum(axis=0)  # (V,) documents containing each token
        self.idf = np.log(1 + (len(docs) - n_t + 0.5) / (n_t + 0.5))  # (V,)
        norm = k1 * (1 - b + b * lengths / lengths.mean())  # (N,)
        denom = tf + norm[:, None]
        # (N, V): each token's score in each document (0 where it is absent, also when k1 = 0)
        self.weights = self.idf * np.divide(tf * (k1 + 1), denom, out=np.zeros_like(tf), where=tf > 0)
        self.n_documents = len(docs)

    def scores(self, query_tokens) -> np.ndarray:
        """One score per document, shape (N,); a query token no document contains adds nothing."""
        q = sorted(set(_check_tokens("query_tokens", query_tokens)))
        q = [t for t in q if t < self.weights.shape[1]]
        return self.weights[:, q].sum(axis=1) if q else np.zeros(self.n_documents)

    def top_k(self, query_tokens, k: int) -> list:
        """Indices of the k best documents, best first (ties: lower index first)."""
        return top_k(self.scores(query_tokens), k)


def top_k(scores, k: int) -> list:
    """Indices of the ``k`` largest scores, best first; ties go to the lower index."""
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"scores must be one number per document (a vector), got shape {scores.shape}")
    return np.argsort(-scores, kind="stable")[:k].tolist()


def bm25_scores(query_tokens, documents, *, k1: float = 1.2, b: float = 0.75) -> np.ndarray:
    """BM25 score of every document for one query (see the module docstring), shape (N,).

    >>> bm25_scores([7], [[7, 1], [1, 1]]).round(4).tolist()   # only the first document holds token 7
    [0.6931, 0.0]

    The index of the last few document lists is kept, so scoring many queries against one corpus costs one
    index build: the same list object (not changed in place meanwhile) with the same k1 and b reuses it.
    """
    key = (id(documents), k1, b)
    hit = _INDEXES.get(key)
    if hit is None or hit[0] is not documents or hit[1] != _shape(documents):
        if len(_INDEXES) >= 4:
            _INDEXES.pop(next(iter(_INDEXES)))
        hit = _INDEXES[key] = (documents, _shape(documents), BM25Index(documents, k1=k1, b=b))
    return hit[2].scores(query_tokens)


def _shape(documents) -> tuple:
    """A cheap signature of a document list: its length and its first and last documents."""
    if not isinstance(documents, (list, tuple)) or not documents:
        return (type(documents).__name__,)
    return len(documents), tuple(documents[0]), tuple(documents[-1])


_INDEXES: dict = {}  # (id of the list, k1, b) -> (the list, its signature, BM25Index); the list is kept alive


def exact_match(query_tokens, documents) -> list:
    """Indices of the documents that contain every query token (the retriever a database would use).

    >>> exact_match([1, 2], [[1, 2, 3], [1, 4], [2, 1]])
    [0, 2]
    """
    q = set(_check_tokens("query_tokens", query_tokens))
    return [i for i, d in enumerate(_check_documents(documents)) if q <= set(d)]
