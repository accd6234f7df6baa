"""Compiled-code checks of the cost model, run as ``python -m tests.perf.cost_compile_checks``
in a process without Triton's interpreter (tests run under it); prints one JSON object:

* ``known``: the main loop of `sum_kernel` per architecture, whose count is known by hand: each
  iteration loads one float32 per thread (128 threads, ``BLOCK`` = 128: one ``LDG.E``) and adds it
  (one ``FADD``), plus the loop's address, counter and branch instructions; ``replay``: a warp's
  pass of that loop (`perf.cost.warp_issue`) with every variable-latency instruction taking
  `REPLAY_LATENCY` cycles, and whether every instruction of the body had its control;
* ``specialization``: for the dispatcher's hot launches, where Triton's own binder and the
  documented rule (`perf.cost.specialize.rule_specialization`) disagree (empty: they agree).
"""

from __future__ import annotations

import json

import torch
import triton
import triton.language as tl

BLOCK = 128
WARPS = 4
REPLAY_LATENCY = 100


@triton.jit
def sum_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    acc = tl.zeros((BLOCK,), tl.float32)
    for i in range(0, n, BLOCK):
        acc += tl.load(x_ptr + i + offs)
    tl.store(y_ptr + offs, acc)


def known() -> dict:
    from perf.cost.compiled import analyze, compile_launch
    from perf.cost.warp_issue import pass_cycles

    x, y = torch.zeros(4 * BLOCK), torch.zeros(BLOCK)
    out = {}
    for arch in (90, 80):
        compiled = compile_launch(sum_kernel, (x, y, 4096), {"BLOCK": BLOCK, "num_warps": WARPS}, arch)
        cost = analyze(compiled, items_per_iteration=BLOCK)
        out[arch] = {
            **cost.as_dict(),
            "per_iteration": cost.counts.per_iteration,
            "warp_instructions_per_iteration": cost.warp_instructions_per_iteration,
            "controlled": all(i.control is not None for i in cost.counts.body),
            "body": len(cost.counts.body),
            "replay": pass_cycles(cost.counts.body, lambda i: REPLAY_LATENCY, 4, 20),
        }
    return out


def specialization() -> dict:
    from perf.cost.launches import REFERENCE_LAYER, layer_launches
    from perf.cost.layer_stats import build_stats
    from perf.cost.specialize import rule_specialization, specialize
    from workloads import LLM_LAYERS

    stats = build_stats(LLM_LAYERS[REFERENCE_LAYER])
    mismatches = {}
    for form, batch in (("fixed", 1), ("fixed", 16), ("huffman", 1), ("huffman", 8)):
        (launch,) = layer_launches(form, stats, batch)
        jit = specialize(launch.kernel, launch.args, launch.kwargs, 90)
        rule = rule_specialization(launch.kernel, launch.args, launch.kwargs)
        differs = [
            name
            for k, name in enumerate(jit.arg_names)
            if jit.signature[name] != rule.signature[name]
            or jit.constexprs.get((k,)) != rule.constexprs.get((k,))
            or bool(jit.attrs.get((k,))) != bool(rule.attrs.get((k,)))
        ]
        mismatches[f"{form} {batch}"] = {"source": jit.source, "differs": differs, "one": jit.constant_one()}
    return mismatches


if __name__ == "__main__":
    print(json.dumps({"triton": triton.__version__, "known": known(), "specialization": specialization()}))
