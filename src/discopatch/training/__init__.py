"""Training: the adversarial game that produces D, and what a training run needs around it.

``trainer`` (``Trainer``: the schedule, checkpoints, exact resume), ``steps`` (the G-then-D step that ``Trainer``
builds on), ``checkpoint`` (``TrainState`` and the checkpoint files), ``distributed`` (DDP under
``torchrun``), ``memory`` (freed memory kept in the process during ``fit``), ``interrupts`` (Ctrl-C held until the
running step is counted), ``levers`` (the optional, off-by-default levers of the game) and ``speed``
(``bench-speed --train``). Nothing here imports the evaluation, monitoring, benchmark or command-line packages
(``tests/test_import_graph.py``); the package itself imports nothing, so ``discopatch.training.interrupts`` can be
imported without PyTorch.
"""
