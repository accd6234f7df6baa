"""Instruction classes of SASS (sm_80 / sm_90) and the memory operations shared with PTX.

`sass_class` sorts an opcode into the classes the cost tables count: global loads and stores by
access width (``ldg.32``, ``ldg.128`` ...), shared loads/stores, shuffles, warp reductions,
barriers, integer ALU, ``IMAD`` (which runs on the FMA pipe), float and FMA, conversions, moves,
uniform-datapath instructions, branches and the rest. `LSU_CLASSES` are the classes issued to the
load/store (MIO) pipe. `sass_memory_op` / `ptx_memory_op` name the memory operations that ptxas
keeps one-for-one from PTX to SASS, so their ratio between a SASS loop and its PTX loop is the
factor by which ptxas unrolled it.
"""

from __future__ import annotations

_WIDTH_MODIFIERS = {"U8": 8, "S8": 8, "U16": 16, "S16": 16, "64": 64, "128": 128}
# LDGSTS: cp.async, a global load into shared memory (Triton's software pipeline issues them).
_WIDTH_CLASSES = {
    "LDG": "ldg", "LDGSTS": "ldgsts", "STG": "stg", "LDS": "lds", "STS": "sts", "LD": "ld", "ST": "st"
}  # fmt: skip
_FIXED_CLASSES = {
    "LDSM": "ldsm",
    "LDL": "local",
    "STL": "local",
    "LDC": "constant",
    "ULDC": "constant",
    "SHFL": "shfl",
    "REDUX": "warp_reduce",
    "VOTE": "warp_reduce",
    "VOTEU": "warp_reduce",
    "MATCH": "warp_reduce",
    "ATOM": "atomic",
    "ATOMG": "atomic",
    "ATOMS": "atomic",
    "RED": "atomic",
    "BAR": "bar",
    "CCTL": "prefetch",  # prefetch.global.L1/L2: a cache hint through the load/store pipe
    "BSSY": "converge",
    "BSYNC": "converge",
    "WARPSYNC": "converge",
    "BREAK": "converge",
    "FFMA": "ffma",
    "HFMA2": "ffma",
    "DFMA": "ffma",
    "F2F": "convert",
    "F2I": "convert",
    "I2F": "convert",
    "I2FP": "convert",
    "F2FP": "convert",
    "F2IP": "convert",
    "I2I": "convert",
    "I2IP": "convert",
    "FRND": "convert",
    "MOV": "move",
    "S2R": "move",
    "CS2R": "move",
    "P2R": "move",
    "R2P": "move",
    "HMMA": "mma",
    "IMMA": "mma",
    "HGMMA": "mma",
    "BRA": "branch",
    "BRX": "branch",
    "JMP": "branch",
    "JMX": "branch",
    "CALL": "branch",
    "RET": "branch",
    "EXIT": "branch",
    "KILL": "branch",
}
_INTEGER = {
    "IADD3", "IADD", "VIADD", "VIADDMNMX", "LEA", "LOP3", "LOP", "SHF", "SHL", "SHR", "ISETP", "ICMP",
    "IMNMX", "VIMNMX", "SEL", "FLO", "POPC", "BREV", "PRMT", "IABS", "BMSK", "SGXT", "PLOP3", "IDP",
    "IMUL", "ISCADD", "BFE", "BFI", "LEPC",
}  # fmt: skip
_FLOAT = {
    "FADD", "FMUL", "FMNMX", "FSETP", "FSET", "FSEL", "FCHK", "FSWZADD", "HADD2", "HMUL2", "HSETP2",
    "HSET2", "HMNMX2", "DADD", "DMUL", "DSETP", "DMNMX", "MUFU",
}  # fmt: skip
_UNIFORM_MOVES = {"R2UR", "S2UR", "UMOV"}

#: Classes issued to the load/store (MIO) pipe: memory operations, cache prefetches and shuffles.
LSU_CLASSES_PREFIXES = (
    "ldg",
    "stg",
    "lds",
    "sts",
    "ld.",
    "st.",
    "ldsm",
    "local",
    "atomic",
    "shfl",
    "prefetch",
)

#: The classes in table order (width classes appear as ``ldg.<bits>`` etc.).
CLASS_ORDER = (
    "ldg", "ldgsts", "stg", "ld", "st", "lds", "sts", "ldsm", "local", "constant", "shfl", "warp_reduce",
    "atomic", "prefetch", "bar", "converge", "int", "imad", "float", "ffma", "convert", "move", "uniform",
    "mma", "branch", "other",
)  # fmt: skip


def sass_class(opcode: str) -> str:
    """The cost class of a SASS opcode (with modifiers), e.g. ``LDG.E.128`` -> ``ldg.128``."""
    parts = opcode.split(".")
    base = parts[0]
    if base in _WIDTH_CLASSES:
        width = next((_WIDTH_MODIFIERS[m] for m in parts[1:] if m in _WIDTH_MODIFIERS), 32)
        return f"{_WIDTH_CLASSES[base]}.{width}"
    if base in _FIXED_CLASSES:
        return _FIXED_CLASSES[base]
    if base.startswith("IMAD"):
        return "imad"
    if base in _INTEGER:
        return "int"
    if base in _FLOAT:
        return "float"
    if base in _UNIFORM_MOVES or (base.startswith("U") and base[1:] in _INTEGER | {"IMAD", "MOV"}):
        return "uniform"
    return "other"


def is_lsu(cls: str) -> bool:
    """Whether instructions of class ``cls`` issue to the load/store (MIO) pipe."""
    return cls.startswith(LSU_CLASSES_PREFIXES)


def class_sort_key(cls: str) -> tuple[int, int]:
    base, _, width = cls.partition(".")
    return CLASS_ORDER.index(base) if base in CLASS_ORDER else len(CLASS_ORDER), int(width or 0)


_SASS_MEMORY = {
    "LDG": "load.global",
    "LD": "load.global",
    "STG": "store.global",
    "ST": "store.global",
    "LDS": "load.shared",
    "LDSM": "load.shared",
    "STS": "store.shared",
    "SHFL": "shuffle",
    "BAR": "barrier",
    "ATOM": "atomic",
    "ATOMG": "atomic",
    "ATOMS": "atomic",
    "RED": "atomic",
}
_PTX_MEMORY = (
    ("ld.global", "load.global"),
    ("ld.shared", "load.shared"),
    ("ldmatrix", "load.shared"),
    ("st.global", "store.global"),
    ("st.shared", "store.shared"),
    ("shfl", "shuffle"),
    ("bar.", "barrier"),
    ("barrier.", "barrier"),
    ("atom.", "atomic"),
    ("red.", "atomic"),
)
_PTX_OTHER_SPACES = {"param", "const", "local", "tex"}


def sass_memory_op(opcode: str) -> str | None:
    """The memory operation of a SASS opcode that PTX names too (None for other instructions)."""
    return _SASS_MEMORY.get(opcode.split(".", 1)[0])


def ptx_memory_op(opcode: str) -> str | None:
    """The memory operation of a PTX opcode (None for other instructions); generic ``ld``/``st``
    (no state space) count as global, parameter, constant and local accesses as none."""
    for prefix, op in _PTX_MEMORY:
        if opcode.startswith(prefix):
            return op
    base, *modifiers = opcode.split(".")
    if base in ("ld", "st") and not set(modifiers) & _PTX_OTHER_SPACES:
        return "load.global" if base == "ld" else "store.global"
    return None
