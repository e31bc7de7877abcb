"""Evaluation: a fitted detector judged against OOD sets, through the one scoring path.

``evaluate`` (ID scores once, every OOD set against them, the share flagged at the threshold), ``reproduce``
(OpenOOD image lists, the ImageNet-C layout, streamed scoring, the official pipelines as a labelled option) and
``demo`` (``discopatch demo``'s run on the shipped data). The metrics themselves are the leaf
:mod:`discopatch.metrics`, which the speed check and the benchmark read too. Nothing here imports the monitoring,
benchmark or command-line packages (``tests/test_import_graph.py``); the package itself imports nothing.
"""
