"""discopatch: is this image still from the distribution my vision system was built for?

The public API is :class:`Detector` (fit / calibrate / score / predict / save / load) and the presets.
"""

__version__ = "0.1.0"

from .config import Preset, get_preset, paper_preset, small_preset
from .detector import Detector, NotFittedError

__all__ = ["Detector", "NotFittedError", "Preset", "__version__", "get_preset", "paper_preset", "small_preset"]
