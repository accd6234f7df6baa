"""Silicon area of an EIE design point, from the paper's per-PE breakdown (Table II, 45 nm).

Scaling assumptions (first order; the EIE paper gives only the 64-PE design's figures):

* pointer read, sparse-matrix read and activation read/write scale with their memory's size
  (each module is dominated by its SRAM: memory is 594,786 of 638,024 um^2 per PE);
* the activation queue scales with the FIFO depth (8 in the paper);
* the arithmetic unit is kept as is (16-bit datapath);
* filler cells keep their share of the other modules' area;
* the chip is ``pes`` PEs plus the LNZD tree's units (189 um^2 each).
"""

from __future__ import annotations

from eie_model.config import EIEConfig
from eie_model.timing import lnzd_nodes

#: Per-PE area of the paper's design in um^2 (Table II) and the size each one scales with.
PAPER_PE_AREA_UM2 = {
    "activation_queue": 758.0,
    "pointer_read": 121_849.0,
    "spmat_read": 469_412.0,
    "arithmetic": 3_110.0,
    "act_rw": 18_934.0,
}
PAPER_FILLER_UM2 = 23_961.0
LNZD_UNIT_UM2 = 189.0
_PAPER = EIEConfig()


def pe_area_um2(config: EIEConfig) -> dict[str, float]:
    """Per-PE area breakdown in um^2 for ``config`` (``total`` included)."""
    area = {
        "activation_queue": PAPER_PE_AREA_UM2["activation_queue"] * config.fifo_depth / _PAPER.fifo_depth,
        "pointer_read": PAPER_PE_AREA_UM2["pointer_read"] * config.ptr_sram_kb / _PAPER.ptr_sram_kb,
        "spmat_read": PAPER_PE_AREA_UM2["spmat_read"] * config.spmat_sram_kb / _PAPER.spmat_sram_kb,
        "arithmetic": PAPER_PE_AREA_UM2["arithmetic"],
        "act_rw": PAPER_PE_AREA_UM2["act_rw"] * config.act_sram_kb / _PAPER.act_sram_kb,
    }
    modules = sum(area.values())
    area["filler"] = PAPER_FILLER_UM2 * modules / sum(PAPER_PE_AREA_UM2.values())
    area["total"] = sum(area.values())
    return area


def chip_area_mm2(config: EIEConfig) -> float:
    """Area of ``config.pes`` PEs and the LNZD tree in mm^2 (40.8 mm^2 for the paper's design)."""
    return (config.pes * pe_area_um2(config)["total"] + lnzd_nodes(config.pes) * LNZD_UNIT_UM2) * 1e-6
