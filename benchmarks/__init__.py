"""Platform benchmarks; `benchmarks/run.py` is the entry point (see benchmarks/README.md).

Every module's top level imports only the standard library and the kernel's standard-library-only
modules (days, names, paths): a "cold" worker is timed as a whole process, so anything heavier is imported
inside the function that needs it, where the original timing put it.
"""
