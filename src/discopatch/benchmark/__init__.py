"""The benchmark suite: protocol data (:mod:`.datasets`), methods and the runner."""

#: The benchmark protocols (docs/BENCHMARKS.md); here, not in :mod:`.datasets`, so that the CLI offers them without
#: importing numpy.
PROTOCOLS: tuple[str, ...] = ("fmnist", "photos")
