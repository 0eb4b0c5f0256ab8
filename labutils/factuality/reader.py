"""A reader: a TinyGPT that answers from retrieved documents and cites them.

Its input is k retrieved documents, each opened by a cite marker instead of ``<doc>``, then the question;
it writes the value right after the question's entity, the markers of the documents it cites, and ``<end>``::

    [1] city e5 city=3 src:1   [2] field e5 field=0 src:0   [3] city e9 …   <q> city e5  →  city=3 [1] <end>

Trained to *copy*: its training contexts are retrieved (BM25, top k, in rank order) from corpora of other
worlds, whose facts differ from any world it is tested on, so it cannot answer from memory. Its target
cites every document in the context that states the fact (ALCE's precision counts redundant supporting
citations as precise: Gao, Yen, Yu & Chen 2023, arXiv 2305.14627; princeton-nlp/ALCE, eval.py).

What it learns is measured, not assumed. With the documents in rank order, a d64 two-layer reader learns
to copy the asked attribute's value from the *best-ranked* document that states that attribute — and, with
BM25 on these queries, that document nearly always supports the answer. It does not learn to match the
entity. Measured while building the lab, on contexts of four documents that all state the asked attribute
for different people (chance: 0.25), a reader trained on shuffled contexts answered 0.24–0.37 of them
right after 2M tokens (seed 0; also with half or all of its training contexts built that way) and 0.28–0.52
after 6M tokens (≈ 8 CPU-minutes on a busy machine); the ranked reader answers such contexts right only
when the entity's document comes first. Matching a token and copying its neighbour needs an induction head
(Olsson et al. 2022, arXiv 2209.11895), which forms slowly at this size. The notebook's shuffle test shows it.

Left out on purpose: multi-fact answers, abstaining when nothing relevant was retrieved, long contexts.

    >>> from labutils.factuality.world import World
    >>> task = ReaderTask(World.generate(30, {"city": 6, "field": 4}, seed=0), n_worlds=2, n_documents=100, seed=0)
    >>> x = task.sample(2, task.length, seed=[0, 1])
    >>> x.shape == (2, task.length)
    True
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F

from labutils import positive_int
from labutils.factuality.retrieval import BM25Index
from labutils.factuality.world import END, PAD, QUERY, World, valid_seed

K_DOCS = 4  # documents a reader sees
ZIPF, SOURCES, FACTS_PER_DOCUMENT = 1.0, {"encyclopedia": 1.0, "newspaper": 1.0, "blog": 1.0}, 1


def query_tokens(world: World, entity: int, attribute: int) -> list:
    """The question's words, in a sentence's order: the attribute, then the entity (also what BM25 searches for)."""
    return [int(world.attribute_token(attribute)), int(world.entity_token(entity))]


def context(world: World, documents: list, doc_ids, entity: int, attribute: int) -> list:
    """k documents opened by their cite markers, then the question ``<q> attribute entity``."""
    out = []
    for j, d in enumerate(doc_ids):
        out += [world.cite_token(j)] + list(documents[d][1:])
    return out + [QUERY] + query_tokens(world, entity, attribute)


class ReaderTask:
    """A data source of reader sequences (context, answers, citations), for ``train_lm`` with ``reader_loss``.

    ``n_worlds`` worlds shaped like ``world`` (same entities and attributes, other facts: seeds
    ``seed``·1000 + i) each get a corpus; a sequence asks about a fact with a supporting document,
    shows the top ``k`` BM25 documents in rank order (``shuffle=True``: a random order; the last one is
    swapped for a supporting document if none supports), then ``n_questions`` questions — the first the
    retrieval's own, the others about facts stated in the context — each followed by its answer, the cite
    markers of every document in view that states it, and ``<end>``; then padding.
    """

    def __init__(self, world: World, *, n_worlds: int = 16, n_documents: int = 3000, k: int = K_DOCS,
                 n_questions: int = 4, shuffle: bool = False, seed: int = 0):
        self.world, self.k, self.seed = world, positive_int("k", k), valid_seed(seed)
        self.n_questions, self.shuffle = positive_int("n_questions", n_questions), bool(shuffle)
        self.n_worlds = positive_int("n_worlds", n_worlds)
        self.n_documents = positive_int("n_documents", n_documents)
        self._items = []  # (corpus, fact, retrieved ids, supporting ids)
        for i in range(self.n_worlds):
            w = World.generate(world.n_entities, world.attributes, seed=1000 * self.seed + i + 1)
            c = w.corpus(self.n_documents, zipf=ZIPF, sources=SOURCES, seed=i, facts_per_document=FACTS_PER_DOCUMENT)
            index = BM25Index(c.documents)
            for (e, a), sup in c.supporting.items():
                if sup:
                    self._items.append((c, (e, a), index.top_k(query_tokens(w, e, a), self.k), sorted(sup)))
        self.prefix = self.k * (len(self._items[0][0].documents[0])) + 3  # context and question, all the same
        self.length = self.prefix + 1 + self.k + 1 + (self.n_questions - 1) * (3 + 1 + self.k + 1)  # + answers

    @property
    def vocab_size(self) -> int:
        return self.world.vocab_size

    def fingerprint(self) -> str:
        key = f"reader:{self.world.n_entities}:{sorted(self.world.attributes.items())}:{self.n_worlds}:" \
              f"{self.n_documents}:{self.k}:{self.n_questions}:{self.shuffle}:{self.seed}:{ZIPF}:{sorted(SOURCES.items())}"
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def sample(self, n: int, length: int, *, seed) -> torch.LongTensor:
        n, length = positive_int("n", n), positive_int("length", length)
        if length < self.length:
            raise ValueError(f"length must be at least {self.length} (context, answers and citations), got {length}")
        rng = np.random.default_rng(valid_seed(seed))
        out = np.full((n, length), PAD, dtype=np.int64)
        for row, i in enumerate(rng.integers(0, len(self._items), size=n)):
            c, (e, a), ids, sup = self._items[i]
            ids = list(ids)
            if not set(ids) & set(sup):  # make sure the answer is in view
                ids[-1] = sup[rng.integers(len(sup))]
            if self.shuffle:
                ids = [ids[j] for j in rng.permutation(len(ids))]
            seq = context(c.world, c.documents, ids, e, a) + _answer(c, ids, e, a)
            in_view = c.facts[ids].reshape(-1, 3)  # extra questions about facts stated in the context
            for e2, a2, _ in in_view[rng.choice(len(in_view), size=self.n_questions - 1, replace=False)].tolist():
                seq += [QUERY] + query_tokens(c.world, e2, a2) + _answer(c, ids, e2, a2)
            out[row, : len(seq)] = seq
        return torch.from_numpy(out)


def _answer(c, ids: list, e: int, a: int) -> list:
    """The answer after a question: the true value, the markers of the documents in view that state it, <end>."""
    cites = [World.cite_token(j) for j, d in enumerate(ids) if d in c.supporting[(e, a)]]
    return [c.world.value_token(a, c.world.truth[e, a])] + cites + [END]


def answer_mask(tokens: torch.Tensor) -> torch.Tensor:
    """True where a token is part of an answer: from the third token after a ``<q>`` on, not padding."""
    idx = torch.arange(tokens.shape[1]).expand_as(tokens)
    last_q = torch.where(tokens == QUERY, idx, -1).cummax(dim=1).values  # (B, T)
    return (last_q >= 0) & (idx - last_q >= 3) & (tokens != PAD)


def reader_loss(logits, tokens, model):
    """A train_lm loss hook: cross-entropy on answers, citations and ``<end>`` only (not the context)."""
    mask = answer_mask(tokens)[:, 1:]  # (B, T − 1): which next tokens are answer tokens
    return F.cross_entropy(logits[:, :-1][mask].float(), tokens[:, 1:][mask])


@torch.no_grad()
def read(model, world: World, documents: list, retrieved: list, facts) -> tuple:
    """Greedy answers and citations for each fact from its retrieved documents.

    Returns (values (n,), confidence (n,), cited: list of document-index lists). The value is the most
    likely of the attribute's values; then cite markers (or ``<end>``) until ``<end>``.
    """
    facts = np.asarray(facts, dtype=np.int64).reshape(-1, 2)
    x = torch.tensor([context(world, documents, ids, e, a) for (e, a), ids in zip(facts.tolist(), retrieved)])
    model.eval()
    logits = model(x)[:, -1].double()  # (n, V)
    values, conf = np.zeros(len(facts), dtype=np.int64), np.zeros(len(facts))
    for a in np.unique(facts[:, 1]):
        sel = np.flatnonzero(facts[:, 1] == a)
        p = torch.softmax(logits[sel][:, torch.as_tensor(world.value_tokens(a))], dim=-1).numpy()
        values[sel], conf[sel] = p.argmax(1), p.max(1)
    x = torch.cat([x, torch.as_tensor(world.value_token(facts[:, 1], values)).view(-1, 1)], dim=1)
    k = max(len(r) for r in retrieved)
    allowed = torch.tensor([World.cite_token(j) for j in range(k)] + [END])
    cited, done = [[] for _ in facts], np.zeros(len(facts), dtype=bool)
    for _ in range(k + 1):
        nxt = allowed[model(x)[:, -1][:, allowed].argmax(-1)]  # (n,)
        for i, t in enumerate(nxt.tolist()):
            if done[i] or t == END:
                done[i] = True
                continue
            d = retrieved[i][t - World.cite_token(0)] if t - World.cite_token(0) < len(retrieved[i]) else None
            if d is not None and d not in cited[i]:
                cited[i].append(d)
        x = torch.cat([x, nxt.view(-1, 1)], dim=1)
    return values, conf, cited
