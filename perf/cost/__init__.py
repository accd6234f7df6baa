"""GPU kernel cost from the compiled code (no GPU needed).

Every Triton kernel configuration the dispatcher can launch is compiled for sm_90 / sm_80 exactly
as a real launch specializes it (`perf.cost.launches`, `perf.cost.compiled`); the SASS of its main
loop, found from the control flow (`perf.cost.cfg`), is counted by instruction class
(`perf.cost.listing`, `perf.cost.sass_classes`). `perf.cost.roofline` turns those counts and the
layouts' exact byte counts (`perf.cost.layer_stats`) into a per-layer prediction on the machines of
`perf.cost.machines`; `perf.cost.predict` writes the tables and plot, `perf.cost.compare` sets
measured GPU times beside the predictions, `perf.cost.ceilings` holds the CI guard's limits.

Everything this package predicts is **predicted from the compiled code, not measured**.
"""

PREDICTED_LABEL = "predicted from the compiled code, not measured"
