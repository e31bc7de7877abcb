"""The saved detector: what a fitted detector is on disk, and how every file of it is written and checked.

``files`` (the detector directory: ``detector.json`` and the safetensors files, checksums, the digest over every
score-deciding setting, ``detector_id``, fresh files written through a rename; also used for training
checkpoints), ``checks`` (what the schema cannot express: strict JSON numbers, each safetensors file's tensors
against the configuration, and :class:`~discopatch.artifact.checks.ArtifactError`) and ``schema`` (the JSON Schema
of ``detector.json`` and its validator). Below the trainer and the detector, above the model and the statistics
model; the package itself imports nothing.
"""
