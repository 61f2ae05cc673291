"""codeloop: a terminal coding agent built for the fastest possible edit-test loop.

The package is one event stream (`events`) with producers (the loop) and consumers (printers,
the recorder) around it.
"""

__version__ = "0.1.0"
