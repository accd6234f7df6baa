"""A cycle-level simulator and energy model of the EIE accelerator."""
