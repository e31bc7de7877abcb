"""Inference: turning D into scores, and the deployment paths around it.

``engine`` (PyTorch and ONNX Runtime scoring engines, D's logits and per-image layer statistics in one pass),
``onnx_graph`` (the ONNX graph those engines and the export share), ``stats_model`` (the statistics model fused
with D's score), ``explain`` (a score split into its per-patch terms, heat maps), ``export`` (ONNX files with
metadata and the parity check) and ``speed`` (``bench-speed``). Nothing here imports the training, evaluation,
monitoring, benchmark or command-line packages (``tests/test_import_graph.py``); the package itself imports
nothing, so ``import discopatch.inference.x`` loads only ``x`` and what it needs.
"""
