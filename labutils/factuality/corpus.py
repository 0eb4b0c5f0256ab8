"""A corpus of short documents about a World: Zipf-popular entities, sources of known reliability.

Each document is about one entity, drawn with Zipf popularity p(rank r) ∝ r^−zipf, and states
``facts_per_document`` of its attributes (chosen uniformly; one by default), one sentence (entity,
attribute, value) each — "the city of e17 is city=4" — then names its source::

    <doc> city e17 city=4 src:2                                (facts_per_document=1)
    <doc> city e17 city=4 field e17 field=1 src:2              (facts_per_document=2)

(The value follows the entity, so a reader that finds the entity in a document finds the value next to it.)

With one fact per document, mentions are independent draws (entity by popularity, attribute uniform),
the setting in which Good–Turing's N₁/N estimates the chance that a fresh mention is of an unseen fact.

A source of reliability r states the true value with probability r; otherwise it states *its own*
wrong version of that fact (drawn once per source and fact), so one source's errors repeat the same
false value — the way a content farm copies a mistake. The corpus records, per fact, how often it is
mentioned (``fact_counts``) and which documents state it correctly (``supporting``).

The corpus is a *data source* for ``labutils.train.train_lm``: ``.sample(n, length, seed=…)`` packs
documents drawn uniformly from the corpus into sequences that start at a document boundary, so
training reads the corpus as its whole world. It has no exact likelihood (the floor is NaN).

Left out on purpose: documents about several entities, paraphrases, sources that copy each other.

    >>> from labutils.factuality.world import World
    >>> world = World.generate(30, {"city": 6, "field": 4}, seed=0)
    >>> c = world.corpus(200, zipf=1.0, sources={"wiki": 1.0, "blog": 0.8}, seed=1)
    >>> len(c.documents), c.sample(2, 16, seed=[0, 1]).shape
    (200, torch.Size([2, 16]))
    >>> world.decode(c.documents[0])
    '<doc> city e21 city=1 src:1'
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

from labutils import positive_int
from labutils.factuality.world import DOC, MAX_SOURCES, World, valid_seed


@dataclass(eq=False)
class Corpus:
    world: World
    documents: list  # token-id lists, one per document
    source_of: list  # source name of each document
    facts: np.ndarray  # (n_documents, facts_per_document, 3): entity, attribute, value stated
    fact_counts: dict  # (entity, attribute) -> number of mentions (every fact, 0 included)
    supporting: dict  # (entity, attribute) -> set of documents stating its true value (every fact)
    popularity: np.ndarray  # (n_entities,) probability that a document is about each entity
    sources: dict  # source name -> reliability
    shares: dict  # source name -> share of documents
    config: dict = field(default_factory=dict)

    @property
    def vocab_size(self) -> int:
        return self.world.vocab_size

    @property
    def n_mentions(self) -> int:
        """N, the number of training examples: fact mentions in the corpus."""
        return int(self.facts.shape[0] * self.facts.shape[1])

    def counts(self) -> np.ndarray:
        """Mentions per fact as an array (n_entities, n_attributes)."""
        out = np.zeros(self.world.truth.shape, dtype=np.int64)
        np.add.at(out, (self.facts[:, :, 0], self.facts[:, :, 1]), 1)
        return out

    def stating(self, entity: int, attribute: int, value: int) -> set:
        """Documents that state ``value`` for the fact (entity, attribute) — right or wrong."""
        f = self.facts
        hit = (f[:, :, 0] == entity) & (f[:, :, 1] == attribute) & (f[:, :, 2] == value)
        return set(np.flatnonzero(hit.any(axis=1)).tolist())

    def sample(self, n: int, length: int, *, seed) -> torch.LongTensor:
        """``n`` sequences of ``length`` tokens: documents drawn uniformly with replacement, packed."""
        n, length = positive_int("n", n), positive_int("length", length)
        rng = np.random.default_rng(valid_seed(seed))
        tokens = self._token_array()
        per_row = -(-length // tokens.shape[1])  # documents needed to fill one row
        idx = rng.integers(0, tokens.shape[0], size=(n, per_row))
        return torch.from_numpy(tokens[idx].reshape(n, -1)[:, :length].copy())

    def _token_array(self) -> np.ndarray:
        if getattr(self, "_tokens", None) is None:
            self._tokens = np.array(self.documents, dtype=np.int64)  # (n_documents, doc_length)
        return self._tokens

    def draw_queries(self, n: int, *, seed) -> np.ndarray:
        """``n`` facts drawn the way the corpus draws its mentions: (entity, attribute), shape (n, 2)."""
        n = positive_int("n", n)
        rng = np.random.default_rng(valid_seed(seed))
        ent = rng.choice(self.world.n_entities, size=n, p=self.popularity)
        return np.stack([ent, rng.integers(0, self.world.n_attributes, size=n)], axis=1)

    def fingerprint(self) -> str:
        """A short hash of the world and every document (it names the corpus in train_lm's cache key)."""
        h = hashlib.sha256(self.world.fingerprint().encode())
        h.update(self._token_array().tobytes())
        h.update(repr(self.source_of).encode())
        return h.hexdigest()[:16]

    def __repr__(self) -> str:
        return (f"Corpus({len(self.documents)} documents, {self.n_mentions} mentions, sources={self.sources}, "
                f"fingerprint={self.fingerprint()})")


def _check_sources(sources, shares) -> tuple[list, np.ndarray, np.ndarray]:
    if not isinstance(sources, dict) or not sources:
        raise ValueError(f"sources must be a non-empty dict from source name to reliability, got {sources!r}")
    if len(sources) > MAX_SOURCES:
        raise ValueError(f"sources: at most {MAX_SOURCES} sources, got {len(sources)}")
    for name, r in sources.items():
        if not isinstance(r, (int, float)) or isinstance(r, bool) or not 0 < r <= 1:
            raise ValueError(f"sources[{name!r}] must be a reliability in (0, 1], got {r!r}")
    names = list(sources)
    if shares is None:
        w = np.ones(len(names))
    else:
        if not isinstance(shares, dict) or set(shares) != set(names):
            raise ValueError(f"shares must be a dict with the same names as sources {names}, got {shares!r}")
        w = np.array([shares[k] for k in names], dtype=np.float64)
        if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError(f"shares must be non-negative numbers with a positive sum, got {shares!r}")
    return names, np.array([float(sources[k]) for k in names]), w / w.sum()


def make_corpus(world: World, n_documents: int, *, zipf: float, sources: dict, seed, shares: dict | None = None,
                facts_per_document: int = 1) -> Corpus:
    """Draw the documents (see the module docstring). ``World.corpus`` calls this."""
    n_documents = positive_int("n_documents", n_documents)
    if not isinstance(zipf, (int, float)) or isinstance(zipf, bool) or not (np.isfinite(zipf) and zipf >= 0):
        raise ValueError(f"zipf must be a number >= 0, got {zipf!r}")
    m = positive_int("facts_per_document", facts_per_document)
    if m > world.n_attributes:
        raise ValueError(f"facts_per_document ({m}) cannot exceed the number of attributes ({world.n_attributes})")
    names, reliability, share = _check_sources(sources, shares)
    rng = np.random.default_rng(valid_seed(seed))
    E, A = world.truth.shape
    rank = rng.permutation(E)  # entity e has popularity rank rank[e] (0 = most mentioned)
    popularity = (rank + 1.0) ** -float(zipf)
    popularity /= popularity.sum()
    sizes = world.n_values  # (A,)
    # each source's own wrong version of every fact: truth shifted by 1 … V−1 (never the truth)
    shift = 1 + np.floor(rng.random((len(names), E, A)) * (sizes - 1)).astype(np.int64)
    wrong = (world.truth[None] + shift) % sizes  # (n_sources, E, A)

    entity = rng.choice(E, size=n_documents, p=popularity)  # (D,)
    source = rng.choice(len(names), size=n_documents, p=share)  # (D,)
    attrs = np.argsort(rng.random((n_documents, A)), axis=1)[:, :m]  # (D, m) distinct attributes
    corrupt = rng.random((n_documents, m)) >= reliability[source][:, None]  # (D, m)
    ent = np.repeat(entity[:, None], m, axis=1)  # (D, m)
    value = np.where(corrupt, wrong[source[:, None], ent, attrs], world.truth[ent, attrs])  # (D, m)
    facts = np.stack([ent, attrs, value], axis=2)  # (D, m, 3)

    sentences = np.stack([world.attribute_token(attrs), world.entity_token(ent), world.value_token(attrs, value)],
                         axis=2).reshape(n_documents, 3 * m)  # each sentence: attribute, entity, value
    tokens = np.concatenate([np.full((n_documents, 1), DOC), sentences, (world.source_token(0) + source)[:, None]],
                            axis=1)  # (D, 2 + 3m)
    counts, supporting = {}, {}
    for e in range(E):
        for a in range(A):
            counts[(e, a)], supporting[(e, a)] = 0, set()
    for d, (e, a, v) in zip(np.repeat(np.arange(n_documents), m), facts.reshape(-1, 3).tolist()):
        counts[(e, a)] += 1
        if v == world.truth[e, a]:
            supporting[(e, a)].add(int(d))
    return Corpus(world=world, documents=tokens.tolist(), source_of=[names[s] for s in source], facts=facts,
                  fact_counts=counts, supporting=supporting, popularity=popularity,
                  sources=dict(zip(names, reliability.tolist())), shares=dict(zip(names, share.tolist())),
                  config=dict(n_documents=n_documents, zipf=float(zipf), seed=seed, facts_per_document=m))
