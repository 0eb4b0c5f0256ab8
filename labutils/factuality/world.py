"""A synthetic world of arbitrary facts, written down in a token vocabulary.

A world holds ``n_entities`` people, each with one value per attribute (birth year, city, …), drawn
uniformly and independently: the facts have no pattern a model could learn, like the birthdays of
Kalai, Nachum, Vempala & Zhang 2025 ("Why Language Models Hallucinate", arXiv 2509.04664, §3). Every
fact is known exactly, so every hallucination, citation and source error can be scored exactly.

A fact is a pair (entity, attribute); its value is ``world.truth[entity, attribute]``. Tokens::

    <pad> <doc> <q> <end>   [1] … [8]   src:0 … src:7   e0 … e{n-1}   attribute names   values

Left out on purpose: natural language, paraphrases, tokenisers, facts that depend on each other.

    >>> world = World.generate(20, {"city": 5, "field": 3}, seed=0)
    >>> world.n_entities, world.attribute_names, world.vocab_size
    (20, ('city', 'field'), 50)
    >>> world.decode([DOC, world.attribute_token(1), world.entity_token(3), world.value_token(1, 2)])
    '<doc> field e3 field=2'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labutils import positive_int

SPECIALS = ("<pad>", "<doc>", "<q>", "<end>")
PAD, DOC, QUERY, END = range(len(SPECIALS))
MAX_CITES = 8  # cite markers [1] … [8]: a reader sees at most this many documents
MAX_SOURCES = 8  # source tokens src:0 … src:7
_CITE0 = len(SPECIALS)
_SOURCE0 = _CITE0 + MAX_CITES
_ENTITY0 = _SOURCE0 + MAX_SOURCES


def valid_seed(seed, name: str = "seed"):
    """A seed is a non-negative int or a non-empty list of them (numpy's default_rng takes both)."""
    items = seed if isinstance(seed, (list, tuple)) else [seed]
    if not items or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0 for s in items):
        raise ValueError(f"{name} must be a non-negative int or a list of them, got {seed!r}")
    return list(seed) if isinstance(seed, (list, tuple)) else int(seed)



@dataclass(frozen=True, eq=False)
class World:
    """Entities with one uniformly drawn value per attribute; ``truth`` has shape (n_entities, n_attributes)."""

    truth: np.ndarray  # (n_entities, n_attributes) int: the value index of every fact
    attributes: dict  # attribute name -> number of possible values
    seed: int

    @classmethod
    def generate(cls, n_entities: int, attributes: dict, *, seed: int) -> "World":
        """Draw every fact uniformly from its attribute's value set (arbitrary facts: no pattern).

        Example: ``World.generate(300, {"birth_year": 20, "city": 20}, seed=0)``.
        """
        positive_int("n_entities", n_entities)
        if not isinstance(attributes, dict) or not attributes:
            raise ValueError(f"attributes must be a non-empty dict from name to number of values, got {attributes!r}")
        for name, n in attributes.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f"attributes: each name must be an identifier string, got {name!r}")
            if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 2:
                raise ValueError(f"attributes[{name!r}] must be an int >= 2 (number of values), got {n!r}")
        seed = valid_seed(seed)
        rng = np.random.default_rng(seed)
        sizes = [int(n) for n in attributes.values()]
        truth = np.stack([rng.integers(0, n, size=n_entities) for n in sizes], axis=1)  # (n_entities, n_attributes)
        return cls(truth=truth, attributes={k: int(v) for k, v in attributes.items()}, seed=seed)

    # ------------------------------------------------------------------ sizes and token layout
    @property
    def n_entities(self) -> int:
        return self.truth.shape[0]

    @property
    def n_attributes(self) -> int:
        return self.truth.shape[1]

    @property
    def attribute_names(self) -> tuple:
        return tuple(self.attributes)

    @property
    def n_values(self) -> np.ndarray:
        """Number of possible values per attribute, shape (n_attributes,)."""
        return np.array(list(self.attributes.values()), dtype=np.int64)

    @property
    def n_facts(self) -> int:
        return self.truth.size

    def _value0(self) -> np.ndarray:
        """First token id of each attribute's block of value tokens."""
        start = _ENTITY0 + self.n_entities + self.n_attributes
        return start + np.concatenate([[0], np.cumsum(self.n_values)[:-1]])

    @property
    def vocab_size(self) -> int:
        return _ENTITY0 + self.n_entities + self.n_attributes + int(self.n_values.sum())

    def entity_token(self, entity):
        return _ENTITY0 + np.asarray(entity) if np.ndim(entity) else _ENTITY0 + int(entity)

    def attribute_token(self, attribute):
        base = _ENTITY0 + self.n_entities
        return base + np.asarray(attribute) if np.ndim(attribute) else base + int(attribute)

    def value_token(self, attribute, value):
        """Token id of ``value`` of ``attribute`` (both may be arrays of the same shape)."""
        tok = self._value0()[np.asarray(attribute)] + np.asarray(value)
        return tok if np.ndim(tok) else int(tok)

    def value_tokens(self, attribute: int) -> np.ndarray:
        """All value token ids of one attribute, in value order."""
        return self._value0()[attribute] + np.arange(self.n_values[attribute])

    @staticmethod
    def cite_token(k: int) -> int:
        """The marker of the k-th document (0-based) in a reader's context: ``[k+1]``."""
        if not 0 <= k < MAX_CITES:
            raise ValueError(f"k must lie in [0, {MAX_CITES}), got {k!r}")
        return _CITE0 + k

    @staticmethod
    def source_token(s: int) -> int:
        if not 0 <= s < MAX_SOURCES:
            raise ValueError(f"source index must lie in [0, {MAX_SOURCES}), got {s!r}")
        return _SOURCE0 + s

    def token_names(self) -> list:
        names = list(SPECIALS) + [f"[{k + 1}]" for k in range(MAX_CITES)] + [f"src:{s}" for s in range(MAX_SOURCES)]
        names += [f"e{e}" for e in range(self.n_entities)] + list(self.attribute_names)
        names += [f"{a}={v}" for a, n in self.attributes.items() for v in range(n)]
        return names

    def decode(self, tokens) -> str:
        """Token ids as readable words, e.g. ``'<doc> city e3 city=2'``."""
        names = self.token_names()
        return " ".join(names[int(t)] for t in np.asarray(tokens).ravel())

    def fingerprint(self) -> str:
        import hashlib

        h = hashlib.sha256(repr(sorted(self.attributes.items())).encode())
        h.update(np.ascontiguousarray(self.truth, dtype=np.int64).tobytes())
        return h.hexdigest()[:16]

    def __repr__(self) -> str:
        return f"World(n_entities={self.n_entities}, attributes={self.attributes}, seed={self.seed})"

    def corpus(self, n_documents: int, *, zipf: float, sources: dict, seed: int, shares: dict | None = None,
               facts_per_document: int = 1):
        """A corpus of short documents about this world; see ``labutils.factuality.corpus.Corpus``."""
        from labutils.factuality.corpus import make_corpus

        return make_corpus(self, n_documents, zipf=zipf, sources=sources, seed=seed, shares=shares,
                           facts_per_document=facts_per_document)
