"""The benchmark suite: protocol data (:mod:`.datasets`), methods and the runner."""
