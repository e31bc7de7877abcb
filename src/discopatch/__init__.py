"""discopatch: is this image still from the distribution my vision system was built for?"""

__version__ = "0.1.0"
