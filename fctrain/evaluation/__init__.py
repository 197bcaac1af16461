"""Evaluation: one module per benchmark over shared method and scoring code.

- regions: box/phrase selection, retrieval and zero-shot classification on our VG validation shards.
"""
