"""discopatch: is this image still from the distribution my vision system was built for?

The public API is :class:`Detector` (fit / calibrate / score / predict / save / load), the presets, and the
per-image outputs: :class:`Prediction` (what ``predict`` returns) and :func:`results_frame` (rows as a pandas
DataFrame, with the ``[pandas]`` extra).
"""

from ._version import __version__
from .config import Preset, get_preset, paper_preset, small_preset
from .detector import Detector, NotFittedError
from .results import Prediction, results_frame

__all__ = [
    "Detector",
    "NotFittedError",
    "Prediction",
    "Preset",
    "__version__",
    "get_preset",
    "paper_preset",
    "results_frame",
    "small_preset",
]
