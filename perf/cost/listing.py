"""Assembly listings as instruction lists with their control flow: SASS from ``nvdisasm`` and PTX.

Both parsers produce a `Listing`: the instructions in program order, each with its opcode,
predicate and control-flow role, and the labels (label -> index of the instruction that follows).
`perf.cost.cfg` builds the control-flow graph from that alone, so the same loop detection runs on
SASS and on PTX. SASS disassembled with ``nvdisasm -hex`` also gives each instruction's scheduling
control (`Control`), which ptxas encodes in bits 105-125 of the 128-bit instruction (Volta and
later): what `perf.cost.warp_issue` replays.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from perf.cost.errors import ListingError

# Control-flow roles: a direct branch (conditional when predicated), an indirect branch (targets
# unknown), a return / exit (no successor when unpredicated), a call (returns to the next
# instruction) and plain instructions.
FLOW_NONE, FLOW_BRANCH, FLOW_INDIRECT, FLOW_EXIT, FLOW_CALL = "none", "branch", "indirect", "exit", "call"

_SASS_LINE = re.compile(
    r"^\s*/\*(?P<offset>[0-9a-f]+)\*/\s+(?:(?P<pred>@!?U?P(?:T|\d+))\s+)?(?P<op>[A-Z][A-Z0-9_.]*)"
    r"(?P<rest>[^;]*);"
)
_SASS_HEX = re.compile(r"/\*\s*0x(?P<word>[0-9a-f]{16})\s*\*/\s*$")
_SASS_LABEL = re.compile(r"^\s*(?P<label>[.$A-Za-z_][\w.$]*):\s*$")
_SASS_TARGET = re.compile(r"`\((?P<label>[^)]+)\)")
_SASS_BRANCH = {"BRA", "JMP"}
_SASS_INDIRECT = {"BRX", "JMX"}
_SASS_EXIT = {"EXIT", "RET", "KILL"}
_SASS_CALL = {"CALL"}
# A call that keeps no return address: on sm_80 ptxas leaves a loop with one
# (``@!P4 CALL.REL.NOINC `(.L_x_0)`` then ``BRA`` back to the loop's head), into code that never
# returns. In a function without a return it is a jump.
_SASS_JUMP_CALL = "NOINC"

_PTX_LABEL = re.compile(r"^\s*(?P<label>\$?[A-Za-z_$][\w$.]*):")
_PTX_INSTRUCTION = re.compile(r"^(?:(?P<pred>@!?%?[\w]+)\s+)?(?P<op>[a-z][\w.]*)(?P<rest>.*)$")


@dataclass(frozen=True)
class Control:
    """An instruction's scheduling control as ptxas sets it: ``stall``, the cycles its warp waits
    before issuing the next instruction (ptxas counts the fixed-latency results the next ones
    read); ``write_barrier`` / ``read_barrier``, the scoreboard (0-5; None: none) a
    variable-latency instruction (a load, a shuffle) releases once its result is written / its
    operands are read; ``wait_mask``, the scoreboards (bit i: scoreboard i) the instruction waits
    on before it issues; ``yield_hint``: the scheduler may switch warps."""

    stall: int
    yield_hint: bool
    write_barrier: int | None
    read_barrier: int | None
    wait_mask: int

    @classmethod
    def from_word(cls, high: int) -> Control:
        """The control fields of an instruction's high 64-bit word (bits 41-61 of it)."""
        bits = high >> 41
        write, read = (bits >> 5) & 7, (bits >> 8) & 7
        return cls(
            stall=bits & 15,
            yield_hint=bool((bits >> 4) & 1),
            write_barrier=None if write == 7 else write,
            read_barrier=None if read == 7 else read,
            wait_mask=(bits >> 11) & 63,
        )


@dataclass(frozen=True)
class Instruction:
    """One instruction: ``opcode`` with its modifiers (``LDG.E.128``, ``ld.global.v4.b32``),
    its guard predicate (None when unguarded), its role in the control flow, for direct
    branches and calls the target label, and its scheduling control (SASS with ``-hex``)."""

    opcode: str
    predicate: str | None = None
    flow: str = FLOW_NONE
    target: str | None = None
    control: Control | None = None

    @property
    def base(self) -> str:
        """The opcode without modifiers (``LDG``, ``ld``)."""
        return self.opcode.split(".", 1)[0]

    @property
    def never(self) -> bool:
        """Guarded by the constant false predicate (never executes)."""
        return self.predicate in ("@!PT", "@!UPT")

    @property
    def conditional(self) -> bool:
        return self.predicate is not None and self.predicate not in ("@PT", "@UPT")


@dataclass
class Listing:
    """A function's instructions in program order and its labels (label -> instruction index)."""

    instructions: list[Instruction] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.instructions)


def parse_sass(text: str, function: str | None = None) -> Listing:
    """The listing of one function of ``nvdisasm -c`` output (the first when ``function`` is None).

    Only the function's own section counts: the padding after its last instruction (a branch to
    itself and NOPs) is part of the section but unreachable, which `perf.cost.cfg` accounts for."""
    sections = _sass_sections(text)
    if not sections:
        raise ListingError("no code section in the SASS listing (is it nvdisasm -c output?)")
    if function is None:
        name, lines = next(iter(sections.items()))
    elif function in sections:
        name, lines = function, sections[function]
    else:
        raise ListingError(f"function {function!r} not in the SASS listing (found {sorted(sections)})")
    listing = Listing()
    for k, line in enumerate(lines):
        label = _SASS_LABEL.match(line)
        if label:
            listing.labels[label.group("label")] = len(listing.instructions)
            continue
        m = _SASS_LINE.match(line)
        if m is None:
            continue
        op = m.group("op")
        base = op.split(".", 1)[0]
        target = _SASS_TARGET.search(m.group("rest"))
        if base in _SASS_BRANCH:
            flow = FLOW_BRANCH if target else FLOW_INDIRECT
        elif base in _SASS_INDIRECT:
            flow = FLOW_INDIRECT
        elif base in _SASS_EXIT:
            flow = FLOW_EXIT
        elif base in _SASS_CALL:
            flow = FLOW_CALL
        else:
            flow = FLOW_NONE
        label_target = target.group("label") if target else None
        listing.instructions.append(Instruction(op, m.group("pred"), flow, label_target, _control(lines, k)))
    if not listing.instructions:
        raise ListingError(f"the SASS of {name!r} holds no instructions")
    if not any(i.base == "RET" for i in listing.instructions):
        for k, ins in enumerate(listing.instructions):
            if ins.flow == FLOW_CALL and _SASS_JUMP_CALL in ins.opcode.split("."):
                listing.instructions[k] = replace(ins, flow=FLOW_BRANCH)
    return listing


def _control(lines: list[str], k: int) -> Control | None:
    """The control of the instruction on line ``k``: ``nvdisasm -hex`` prints its low 64-bit word
    at the end of the line and the high one alone on the next (None without ``-hex``)."""
    if not _SASS_HEX.search(lines[k]) or k + 1 >= len(lines):
        return None
    high = _SASS_HEX.search(lines[k + 1])
    if high is None or _SASS_LINE.match(lines[k + 1]):
        return None
    return Control.from_word(int(high.group("word"), 16))


def _sass_sections(text: str) -> dict[str, list[str]]:
    """Lines of each ``.text.<function>`` section."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.split(maxsplit=1)[:1] == [".section"]:
            name = stripped.split()[1].split(",")[0]
            current = sections.setdefault(name[len(".text.") :], []) if name.startswith(".text.") else None
        elif current is not None:
            current.append(line)
    return sections


def parse_ptx(text: str, function: str | None = None) -> Listing:
    """The listing of one ``.entry`` / ``.func`` body of a PTX module (the first entry when
    ``function`` is None). Directives, comments and scope braces are skipped."""
    body = _ptx_body(text, function)
    listing = Listing()
    for raw in body:
        line = raw.split("//", 1)[0]
        label = _PTX_LABEL.match(line)
        if label:
            listing.labels[label.group("label")] = len(listing.instructions)
            line = line[label.end() :]
        for statement in line.split(";")[:-1] if ";" in line else []:
            statement = statement.strip().strip("{}").strip()
            if not statement or statement.startswith("."):
                continue
            m = _PTX_INSTRUCTION.match(statement)
            if m is None:
                raise ListingError(f"cannot parse the PTX statement {statement!r}")
            op, rest = m.group("op"), m.group("rest").strip()
            base = op.split(".", 1)[0]
            if base == "bra":
                listing.instructions.append(Instruction(op, m.group("pred"), FLOW_BRANCH, rest.split()[-1]))
            elif base == "brx":
                listing.instructions.append(Instruction(op, m.group("pred"), FLOW_INDIRECT))
            elif base in ("ret", "exit", "trap"):
                listing.instructions.append(Instruction(op, m.group("pred"), FLOW_EXIT))
            elif base == "call":
                listing.instructions.append(Instruction(op, m.group("pred"), FLOW_CALL))
            else:
                listing.instructions.append(Instruction(op, m.group("pred")))
    if not listing.instructions:
        raise ListingError("the PTX function holds no instructions")
    return listing


def _ptx_body(text: str, function: str | None) -> list[str]:
    """Lines between the opening and the closing brace of the function's body."""
    lines = text.splitlines()
    header = re.compile(r"\.(?:entry|func)\s+(?:\([^)]*\)\s*)?(?P<name>[\w$]+)")
    for i, line in enumerate(lines):
        m = header.search(line)
        if m is None or (function is not None and m.group("name") != function):
            continue
        depth, body, started = 0, [], False
        for inner in lines[i + 1 :]:
            code = inner.split("//", 1)[0]
            if not started:
                if "{" in code:
                    started, depth = True, code.count("{") - code.count("}")
                continue
            depth += code.count("{") - code.count("}")
            if depth <= 0:
                return body
            body.append(inner)
        raise ListingError(f"PTX function {m.group('name')!r} has no closing brace")
    raise ListingError(f"no PTX function {function or '(entry)'} found")
