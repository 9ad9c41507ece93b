"""The report of a TensorRT parser check: one :class:`Problem` per refusal, merged across releases.

Shared by the parser's rules (:mod:`fcn_deploy.converters.tensorrt_rules`), the DLA's
(:mod:`fcn_deploy.converters.tensorrt_dla`) and the entry points that run them
(:mod:`fcn_deploy.converters.tensorrt_check`), so that none of them imports another's caller.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

RELEASES: Tuple[str, ...] = ("8.5", "8.6", "10", "11")
# The operator matrix each release is checked against: 10 and 11 have none published of their
# own, and 10.0's is the nearest (JetPack 6.1/6.2 carry 10.3).
MATRIX: Dict[str, str] = {"8.5": "8.5", "8.6": "8.6", "10": "10.0", "11": "10.0"}
ERROR = "error"
NOTE = "note"


def matrix_note(releases: Iterable[str]) -> str:
    """"10 and 11 per the 10.0 matrix ..." for the releases among ``releases`` it concerns, or ""."""
    later = [r for r in releases if MATRIX.get(r) != r]
    return f"{' and '.join(later)} per the {MATRIX[later[0]]} matrix, the nearest published" if later else ""


@dataclass(frozen=True)
class Problem:
    """One thing a release refuses (``severity`` ``error``) or does differently (``note``:
    a layer the DLA hands to the GPU). ``releases`` are those it applies to; ``node`` and
    ``op_type`` are empty for the graph as a whole; ``rule`` names the rule (``operator``,
    ``data-type``, ``uint8``, ``initializer``, ``qdq``, ``opset``, ``restriction``, ``dla``)."""

    releases: Tuple[str, ...]
    rule: str
    message: str
    node: str = ""
    op_type: str = ""
    severity: str = ERROR
    from_matrix: bool = False  # the rule is an operator matrix's, so 10 and 11 mean the 10.0 one

    def line(self, label: str = "") -> str:
        """``camvid.onnx: TensorRT 8.6, 10, 11: node /Transpose (Transpose) makes ...``."""
        where = f"{label}: " if label else ""
        note = "note: " if self.severity == NOTE else ""
        matrix = f" ({matrix_note(self.releases)})" if self.from_matrix and matrix_note(self.releases) else ""
        return f"{where}TensorRT {', '.join(self.releases)}: {note}{self.message}{matrix}"


@dataclass
class CheckReport:
    """Every problem found, merged across releases (one line each)."""

    releases: Tuple[str, ...]
    opset: Optional[int]
    nodes: int
    problems: List[Problem] = field(default_factory=list)
    label: str = ""
    dla: bool = False

    @property
    def errors(self) -> List[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def notes(self) -> List[Problem]:
        return [p for p in self.problems if p.severity == NOTE]

    @property
    def ok(self) -> bool:
        """True when no release refuses the graph (notes do not count)."""
        return not self.errors

    def summary(self) -> str:
        """The line for a graph every release accepts."""
        where = f"{self.label}: " if self.label else ""
        details = [f"opset {self.opset}" if self.opset is not None else "no ONNX opset", f"{self.nodes} nodes"]
        if matrix_note(self.releases):
            details.append(matrix_note(self.releases))
        accepted = f"{where}accepted by the ONNX parser of TensorRT {', '.join(self.releases)} ({'; '.join(details)})"
        if self.dla:
            accepted += "; DLA: " + ("see the notes above" if self.notes else "every layer can run on it")
        return accepted

    def lines(self) -> List[str]:
        """One line per problem (errors first), or the summary when there are no errors."""
        lines = [p.line(self.label) for p in self.errors + self.notes]
        if self.ok:
            lines.append(self.summary())
        return lines

    def closing_line(self) -> str:
        """The last line of a report with problems, so that a long one (hundreds of lines for an
        INT8 graph made for CPUs) ends with its verdict: which releases refuse the graph, how many
        problems at how many nodes, under which rules, and which releases accept it."""
        errors = self.errors
        if not errors:
            return self.summary()
        where = f"{self.label}: " if self.label else ""
        refusing = [r for r in self.releases if any(r in p.releases for p in errors)]
        accepting = [r for r in self.releases if r not in refusing]
        nodes = {p.node for p in errors if p.node}
        rules: Dict[str, int] = {}
        for problem in errors:
            rules[problem.rule] = rules.get(problem.rule, 0) + 1
        counts = ", ".join(f"{rule} {n}" for rule, n in sorted(rules.items(), key=lambda item: (-item[1], item[0])))
        at = f" at {len(nodes)} node{'s' if len(nodes) != 1 else ''}" if nodes else ""
        verdict = (f"accepted by TensorRT {', '.join(accepting)}" if accepting else "no release accepts it")
        notes = f"; {len(self.notes)} note{'s' if len(self.notes) != 1 else ''}" if self.notes else ""
        return (f"{where}refused by TensorRT {', '.join(refusing)}: {len(errors)} problem"
                f"{'s' if len(errors) != 1 else ''}{at} (by rule: {counts}){notes}; {verdict}")

    def error_summary(self) -> str:
        """One line for an exception: how many problems, the first, and how to see them all."""
        errors = self.errors
        if not errors:
            return self.summary()
        where = self.label or "the ONNX"
        more = f" (and {len(errors) - 1} more: `fcn-deploy check {self.label or 'FILE'}` lists them)" if len(errors) > 1 else ""
        return f"TensorRT would refuse {where}: {errors[0].line()}{more}"
