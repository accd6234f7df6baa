"""The one table of machine figures the cost model uses, each with its source.

Sources (NVIDIA documents, by name):

* **H100 datasheet**: "NVIDIA H100 Tensor Core GPU" datasheet (H100 SXM: 3.35 TB/s HBM3, 80 GB).
* **H200 datasheet**: "NVIDIA H200 Tensor Core GPU" datasheet (141 GB HBM3e, 4.8 TB/s).
* **Hopper whitepaper**: "NVIDIA H100 Tensor Core GPU Architecture" (132 SMs on H100 SXM5, 50 MB
  L2, four partitions per SM each issuing one warp-instruction per clock, 64K 32-bit registers
  and up to 228 KB shared memory per SM, boost clock 1.98 GHz).
* **Programming Guide**: "CUDA C++ Programming Guide", tables "Technical Specifications per
  Compute Capability" (warps, blocks, registers, shared memory per SM for 8.0 and 9.0) and
  "Throughput of Native Arithmetic Instructions" (warp shuffle: 32 results per clock per SM).
* **planning figure**: not from a document; a round number to plan with (sustained clock under
  load, device-copy bandwidth, latencies, launch overhead, efficiencies). A GPU run checks them:
  `perf.cost.compare` sets measured times beside the predictions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from perf.cost.errors import UnknownArchitecture


@dataclass(frozen=True)
class ArchLimits:
    """Per-SM resource limits of a compute capability (Programming Guide) and the allocation
    granularities of the CUDA Occupancy Calculator."""

    arch: int
    registers_per_sm: int = 65536
    max_registers_per_thread: int = 255
    register_unit_per_warp: int = 256
    max_warps_per_sm: int = 64
    max_ctas_per_sm: int = 32
    shared_bytes_per_sm: int = 228 * 1024
    shared_reserved_per_cta: int = 1024
    shared_unit: int = 128

    def resident_ctas(self, registers: int, num_warps: int, shared_bytes: int) -> int:
        """CTAs of ``num_warps`` warps that fit on one SM at ``registers`` per thread and
        ``shared_bytes`` of shared memory per CTA."""
        per_warp = -(-max(registers, 1) * 32 // self.register_unit_per_warp) * self.register_unit_per_warp
        by_registers = (self.registers_per_sm // per_warp) // num_warps
        by_warps = self.max_warps_per_sm // num_warps
        need = shared_bytes + self.shared_reserved_per_cta
        need = -(-need // self.shared_unit) * self.shared_unit
        by_shared = self.shared_bytes_per_sm // need
        return max(0, min(by_registers, by_warps, by_shared, self.max_ctas_per_sm))


ARCH_LIMITS: dict[int, ArchLimits] = {
    80: ArchLimits(80, shared_bytes_per_sm=164 * 1024),
    90: ArchLimits(90),
}


def arch_limits(arch: int) -> ArchLimits:
    if arch not in ARCH_LIMITS:
        raise UnknownArchitecture(f"no SM limits for sm_{arch}; known: {sorted(ARCH_LIMITS)}")
    return ARCH_LIMITS[arch]


@dataclass(frozen=True)
class Machine:
    """One GPU's figures (units in the names)."""

    key: str
    name: str
    arch: int
    sms: int
    l2_mb: float
    hbm_tb_s: float
    copy_tb_s: float
    boost_ghz: float
    sustained_ghz: float
    issue_per_sm_clock: int
    lsu_per_sm_clock: float
    l1_wavefronts_per_sm_clock: float
    l1_latency_cycles: int
    l2_latency_cycles: int
    hbm_latency_cycles: int
    shared_latency_cycles: int
    other_latency_cycles: int
    operand_read_cycles: int
    barrier_cycles: int
    launch_us: float
    hbm_efficiency: float
    pipe_efficiency: float

    @property
    def limits(self) -> ArchLimits:
        return arch_limits(self.arch)

    @property
    def clock_hz(self) -> float:
        """The clock the predictions use: the sustained clock (planning figure)."""
        return self.sustained_ghz * 1e9


_H100_SM = {
    "arch": 90,
    "sms": 132,
    "boost_ghz": 1.98,
    "sustained_ghz": 1.75,
    "issue_per_sm_clock": 4,
    "lsu_per_sm_clock": 1.0,
    "l1_wavefronts_per_sm_clock": 1.0,
    "l1_latency_cycles": 35,
    "l2_latency_cycles": 270,
    "hbm_latency_cycles": 600,
    "shared_latency_cycles": 30,
    "other_latency_cycles": 20,
    "operand_read_cycles": 4,
    "barrier_cycles": 20,
    "launch_us": 2.0,
    "hbm_efficiency": 0.88,
    "pipe_efficiency": 0.80,
}

MACHINES: dict[str, Machine] = {
    "h100-sxm": Machine(
        "h100-sxm", "NVIDIA H100 SXM 80 GB", l2_mb=50, hbm_tb_s=3.35, copy_tb_s=3.0, **_H100_SM
    ),
    "h200": Machine("h200", "NVIDIA H200 141 GB", l2_mb=60, hbm_tb_s=4.8, copy_tb_s=4.3, **_H100_SM),
}
DEFAULT_MACHINE = "h100-sxm"

#: Where each figure comes from (field -> source), shown beside the table.
SOURCES: dict[str, str] = {
    "arch": "compute capability 9.0 (Hopper) of both; the compiler target sm_90",
    "sms": "Hopper whitepaper (H100 SXM5: 132 SMs); the H200 uses the same GH100 SM count",
    "l2_mb": "Hopper whitepaper (H100: 50 MB); H200: planning figure (not used by the prediction: "
    "timings are cold, L2 flushed)",
    "hbm_tb_s": "H100 datasheet (SXM: 3.35 TB/s), H200 datasheet (4.8 TB/s)",
    "copy_tb_s": "planning figure: a device-to-device copy reaches about 90% of the datasheet bandwidth "
    "(the byte limit the predictions are compared with)",
    "boost_ghz": "Hopper whitepaper (H100 SXM5 boost clock 1.98 GHz)",
    "sustained_ghz": "planning figure: clock held under a memory-bound load",
    "issue_per_sm_clock": "Hopper whitepaper: 4 partitions per SM, each issuing one warp-instruction "
    "per clock",
    "lsu_per_sm_clock": "Programming Guide throughput table (warp shuffle: 32 results per clock per SM, "
    "8.0 and 9.0): one warp-wide load/store/shuffle per clock per SM",
    "l1_wavefronts_per_sm_clock": "planning figure: the L1 serves one 128-byte line (wavefront) per "
    "clock per SM",
    "l1_latency_cycles": "planning figure",
    "l2_latency_cycles": "planning figure",
    "hbm_latency_cycles": "planning figure",
    "shared_latency_cycles": "planning figure: a shared-memory load or a warp shuffle, issue to result",
    "other_latency_cycles": "planning figure: the other variable-latency instructions (conversions, "
    "special functions, atomics), issue to result",
    "operand_read_cycles": "planning figure: a variable-latency instruction's source registers read "
    "(its read scoreboard released)",
    "barrier_cycles": "planning figure: a CTA barrier whose warps arrive together",
    "launch_us": "planning figure: fixed cost of one kernel timed cold with CUDA events",
    "hbm_efficiency": "planning figure: 88% of the datasheet bandwidth (cuBLAS and the compressed "
    "kernels alike)",
    "pipe_efficiency": "planning figure: share of a pipe's peak a bound reaches (issue, LSU, L1)",
    "limits": "Programming Guide, compute capability 9.0: 64K registers, 64 warps, 32 blocks, 228 KB shared "
    "memory per SM, 1 KB reserved per block; 8.0: 164 KB shared memory",
}


def get_machine(key: str) -> Machine:
    if key not in MACHINES:
        raise UnknownArchitecture(f"unknown machine {key!r}; known: {', '.join(MACHINES)}")
    return MACHINES[key]


def machine_rows() -> list[dict]:
    """The table as rows (one per figure, one column per machine, and the source)."""
    rows = []
    for f in fields(Machine):
        if f.name in ("key", "name"):
            continue
        row = {"figure": f.name, **{m.name: asdict(m)[f.name] for m in MACHINES.values()}}
        row["source"] = SOURCES.get(f.name, "Programming Guide (compute capability)")
        rows.append(row)
    return rows
