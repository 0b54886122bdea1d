"""Reproducible benchmarks of the exchange (not part of the installed package).

A package only so that ``tests/benchmarks`` can import the data generator as
``benchmarks.datagen``; the scripts are run as ``python -m benchmarks.<name>``.
"""
