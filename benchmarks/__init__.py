"""The benchmark of the patch-extraction methods, run from a checkout as
`python benchmarks/run.py`; not part of the installed `ptycho` package.

`methods` holds the table of methods, `measure` the timing, memory and engine checks,
`targets` the targets and verdicts, `plots` the PNG plots and `run` the command line.
"""
