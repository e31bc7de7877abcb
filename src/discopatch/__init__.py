"""discopatch: is this image still from the distribution my vision system was built for?

The public API is :class:`Detector` (fit / calibrate / score / predict / save / load), the presets, and the
per-image outputs: :class:`Prediction` (what ``predict`` returns) and :func:`results_frame` (rows as a pandas
DataFrame, with the ``[pandas]`` extra).

``Detector``, ``Prediction`` and ``results_frame`` are imported on first use (a module ``__getattr__``), so that
``import discopatch`` - and with it ``discopatch --help`` - does not load PyTorch or numpy.
"""

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .config import Preset
from .errors import NotFittedError
from .presets import get_preset, paper_preset, small_preset

if TYPE_CHECKING:
    from .detector import Detector
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


def __getattr__(name: str) -> Any:
    if name == "Detector":
        from .detector import Detector

        return Detector
    if name in ("Prediction", "results_frame"):
        from . import results

        return getattr(results, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
