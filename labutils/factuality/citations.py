"""Citation recall and precision as ALCE defines them (Gao, Yen, Yu & Chen 2023, "Enabling Large Language
Models to Generate Text with Citations", arXiv 2305.14627, its citation-quality metrics; princeton-nlp/ALCE, eval.py).

For a statement and its citations:

* recall is 1 if the cited documents *taken together* entail the statement, else 0;
* a citation is *irrelevant* if it does not entail the statement on its own **and** the other citations
  still entail it without it; precision is the share of citations that are not irrelevant, and is
  credited only when the statement is supported (recall 1).

ALCE judges entailment with an NLI model (TRUE, a T5-11B). In this lab every supporting document states
the fact in full and no other document entails it, so a set of documents entails an answer exactly when
it holds at least one supporting document, and both metrics reduce to set arithmetic. A redundant
citation that supports the answer on its own still counts as precise.

Left out on purpose: statements that need two documents together, partial support, the NLI model.

    >>> citation_precision_recall([3, 5], {3, 7})    # 5 is irrelevant: it adds nothing and 3 suffices
    (0.5, 1.0)
    >>> citation_precision_recall([5], {3, 7})       # unsupported: no credit at all
    (0.0, 0.0)
"""

from __future__ import annotations

import numpy as np


def _check_ids(name: str, ids, kinds) -> list:
    if not isinstance(ids, kinds):
        raise ValueError(f"{name} must be a {' or '.join(k.__name__ for k in kinds)} of document indices, "
                         f"got {type(ids).__name__}")
    ids = list(ids)
    if not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in ids):
        raise ValueError(f"{name} must hold non-negative int document indices, got {ids!r:.80}")
    return [int(d) for d in ids]


def citation_precision_recall(cited, supporting) -> tuple[float, float]:
    """(precision, recall) of one single-fact answer: recall = 1.0 if any cited document supports it;
    precision = |cited ∩ supporting| / |cited| when recall is 1.0, else 0.0; (0.0, 0.0) when nothing is cited.
    A document cited twice counts once."""
    cited = list(dict.fromkeys(_check_ids("cited", cited, (list, tuple, np.ndarray))))
    supporting = set(_check_ids("supporting", supporting, (set, frozenset)))
    hit = sum(d in supporting for d in cited)
    if hit == 0:
        return 0.0, 0.0
    return hit / len(cited), 1.0
