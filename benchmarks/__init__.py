"""The benchmark: the I/O floor, the plain-script baseline and this project on full-scene inputs.

Run it with ``python benchmarks/run_benchmark.py`` (its docstring says what is measured).
``render`` and ``inputs`` build the inputs, ``steps`` and ``project`` are the measured steps,
``measure`` runs one step in a subprocess and measures it, ``report`` writes the results.
"""
