"""Lab 05 — factuality: what a small model knows, when it makes things up, and how it cites its sources.

A seeded world of arbitrary facts (``world``) is written into a corpus by sources of known reliability
(``corpus``); a TinyGPT learns it (``knowledge``); calibration, abstention and the singleton rate say
what it can know (``calibration``); BM25 retrieval (``retrieval``) and a reader that cites
(``reader``, ``citations``) fix the long tail; votes weigh disagreeing sources (``sources``). The stored
readers are made by ``python -m labutils.factuality train`` (``stored``). Checkers are in ``checks``.

    >>> world = World.generate(50, {"city": 8, "field": 5}, seed=0)
    >>> corpus = world.corpus(200, zipf=1.0, sources={"wiki": 1.0}, seed=0)
    >>> 0 < singleton_rate(corpus.fact_counts) < 1
    True
"""

from labutils.factuality.calibration import expected_calibration_error, singleton_rate
from labutils.factuality.citations import citation_precision_recall
from labutils.factuality.corpus import Corpus
from labutils.factuality.retrieval import bm25_scores
from labutils.factuality.sources import weighted_vote
from labutils.factuality.world import World

__all__ = ["World", "Corpus", "singleton_rate", "expected_calibration_error", "bm25_scores",
           "citation_precision_recall", "weighted_vote"]
