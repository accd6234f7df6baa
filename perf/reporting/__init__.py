"""The hardware comparison report, in parts: `collect` (measure and read), `tables` (the numbers
as tables, markdown and CSV), `plots` (PNG figures), `html` (one self-contained page) and
`digits` (the digits network of `dcomp run`). `perf.report` is the command line."""
