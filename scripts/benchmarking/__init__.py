"""The parts of ``scripts/benchmark.py``: each module measures one thing through the library."""
