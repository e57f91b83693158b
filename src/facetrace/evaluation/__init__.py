"""Evaluation: how accurate facetrace is on labelled photos, stated with the metrics of
the LFW protocol (verification) and of NIST's 1:N evaluations (identification).

``embeddings`` computes (and caches) one face per photo; ``metrics`` turns scores into
ROC, EER, TAR@FAR, CMC and FNIR@FPIR; ``verify`` and ``identify`` run the two protocols;
``plots`` draws what a person looks at.
"""
