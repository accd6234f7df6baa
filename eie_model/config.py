"""The parameters of one EIE design point; the defaults are the paper's 64-PE, 45 nm design.

Every field is a plain number or name so that a configuration is hashable, printable and
sweepable (`dataclasses.replace(config, fifo_depth=16)`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from compress.checks import check_int

#: ``semantics`` values: how the activation queue and rows beyond the register file behave.
SEMANTICS = ("hardware", "paper-simulator")


@dataclass(frozen=True)
class EIEConfig:
    """One EIE design point (by default the EIE paper's 64-PE design).

    * ``pes``: processing elements; row ``i`` belongs to PE ``i % pes``.
    * ``fifo_depth``: activations each PE's queue holds; the broadcast stops while any is full.
    * ``sram_width``: bits per sparse-matrix SRAM line; a line holds
      ``sram_width // (weight_bits + index_bits)`` entries (entries never straddle lines).
    * ``clock_mhz``: clock frequency.
    * ``weight_bits`` (v) and ``index_bits`` (z): entry fields; v = 0 is the zero weight.
    * ``pointer_bits``: width of one column pointer.
    * ``act_bits``: fixed-point width of activations, weights after lookup and accumulators.
    * ``rf_size``: activations per PE in each of the two register files (source, destination).
      A PE owning more output rows than this computes them in batches of ``rf_size`` rows.
    * ``ptr_sram_kb``, ``spmat_sram_kb``, ``act_sram_kb``: per-PE memory sizes (area and the
      capacity check; they never change the cycle count).
    * ``arith_stages``: pipeline stages of the arithmetic unit after the sparse-matrix read
      (lookup, multiply, shift-and-add, write).
    * ``semantics``: ``"hardware"`` (default): a queue of depth d holds d activations, and a PE
      owning more rows than ``rf_size`` computes them in passes with a write-back in between;
      ``"paper-simulator"``: the EIE authors' cycle-level simulator (RalphMao/EIE-simulator),
      whose queue of size B is a circular buffer holding B - 1 activations (so ``fifo_depth``
      must be at least 2) and which makes a single pass over all rows, whatever ``rf_size``.
    """

    pes: int = 64
    fifo_depth: int = 8
    sram_width: int = 64
    clock_mhz: float = 800.0
    weight_bits: int = 4
    index_bits: int = 4
    pointer_bits: int = 16
    act_bits: int = 16
    rf_size: int = 64
    ptr_sram_kb: float = 32.0
    spmat_sram_kb: float = 128.0
    act_sram_kb: float = 2.0
    arith_stages: int = 4
    semantics: str = "hardware"

    def __post_init__(self) -> None:
        if not isinstance(self.semantics, str):
            raise TypeError(f"semantics must be a string, got {self.semantics!r}")
        if self.semantics not in SEMANTICS:
            raise ValueError(f"semantics must be one of {SEMANTICS}, got {self.semantics!r}")
        check_int(self.pes, "pes", 1, 4096)
        check_int(self.fifo_depth, "fifo_depth", 1, 1 << 16)
        if self.single_pass and self.fifo_depth < 2:
            raise ValueError(
                f"fifo_depth must be >= 2 with semantics='paper-simulator' (a circular buffer of size "
                f"B holds B - 1 activations), got {self.fifo_depth}"
            )
        check_int(self.weight_bits, "weight_bits", 1, 8)
        check_int(self.index_bits, "index_bits", 1, 8)
        check_int(self.pointer_bits, "pointer_bits", 1, 64)
        check_int(self.act_bits, "act_bits", 2, 32)
        check_int(self.rf_size, "rf_size", 1, 1 << 20)
        check_int(self.arith_stages, "arith_stages", 0, 64)
        check_int(self.sram_width, "sram_width", self.entry_bits, 1 << 16)
        for name in ("clock_mhz", "ptr_sram_kb", "spmat_sram_kb", "act_sram_kb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number, got {value!r}")
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")

    @property
    def entry_bits(self) -> int:
        """Bits of one sparse-matrix entry (v and z)."""
        return self.weight_bits + self.index_bits

    @property
    def entries_per_line(self) -> int:
        return self.sram_width // self.entry_bits

    @property
    def single_pass(self) -> bool:
        """Whether every layer is one pass over all of a PE's rows (the authors' simulator)."""
        return self.semantics == "paper-simulator"

    @property
    def queue_capacity(self) -> int:
        """Activations one PE's queue holds: ``fifo_depth``, or one fewer in the authors'
        circular buffer (one slot stays empty to tell a full buffer from an empty one)."""
        return self.fifo_depth - 1 if self.single_pass else self.fifo_depth

    def batch_rows(self, out_features: int) -> int | None:
        """Local rows per pass for a layer of ``out_features`` rows (the encoder's ``batch_rows``):
        ``rf_size`` when a PE owns more rows than its register file holds in hardware
        semantics, else ``None`` (one pass)."""
        rows_per_pe = -(-out_features // self.pes)
        return self.rf_size if rows_per_pe > self.rf_size and not self.single_pass else None

    @property
    def max_centroids(self) -> int:
        """Non-zero weights v can address (v = 0 is reserved for the zero of padding entries)."""
        return (1 << self.weight_bits) - 1

    def to_dict(self) -> dict:
        return asdict(self)
