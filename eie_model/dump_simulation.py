"""Simulating an EIE authors' dump: their layer with their own input activations."""

from __future__ import annotations

from pathlib import Path

from eie_model.config import EIEConfig
from eie_model.dump import read_eie_dump
from eie_model.encoding import encode_eie
from eie_model.energy import EnergyTable
from eie_model.simulator import SimResult, simulate_encoded


def dump_label(directory: str | Path) -> str:
    """The layer name a dump folder goes by in results and sweeps: ``dump:<folder name>``."""
    return f"dump:{Path(directory).name}"


def simulate_dump(
    directory: str | Path, config: EIEConfig | None = None, *, energy_table: EnergyTable | None = None
) -> SimResult:
    """Simulate the layer of an authors' dump folder with its own input activations.

    With no ``config`` (or one with the dump's PEs and bit widths that computes the layer in one
    pass) the stored arrays run as they are; otherwise the decoded layer is encoded again for
    ``config``.
    """
    dump = read_eie_dump(directory)
    layer = dump.layer
    if config is None:
        config = EIEConfig(pes=layer.pes, weight_bits=layer.weight_bits, index_bits=layer.index_bits)
    same_layout = (config.pes, config.weight_bits, config.index_bits) == (
        layer.pes,
        layer.weight_bits,
        layer.index_bits,
    ) and config.batch_rows(layer.out_features) is None
    if not same_layout:
        layer = encode_eie(
            dump.matrix,
            config.pes,
            config.weight_bits,
            config.index_bits,
            config.batch_rows(layer.out_features),
        )
    return simulate_encoded(
        layer, dump.activations, config, name=dump_label(directory), energy_table=energy_table
    )
