"""The grader's report: one verdict per function, in a terminal, a notebook, JSON and
Gradescope's ``results.json``.

A :class:`Row` is one output of one function on one case (the ``--verbose`` table and
``rows`` of the JSON). A :class:`FunctionReport` sums a function's rows up: its verdict,
each diagnosis once with the cases it applies to, the first failing case's numbers, and
findings (writing into its inputs, a note on precision). A :class:`Report` holds them all.
"""

from __future__ import annotations

import html
import json
import textwrap
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

from normgrad.learn.mistakes import MISTAKES

#: Verdicts, worst first: a function gets the worst of its failing rows' statuses.
VERDICTS = (
    "timed out",
    "crashed",
    "not implemented",
    "wrong values",
    "wrong shape",
    "depends",
    "not graded",
)


@dataclass
class Row:
    """One output of one function on one case.

    Attributes:
        function, case, output: what was graded (``output`` is ``"dx"``, ``"out (test)"``,
            ``"running_var"``, or ``"grads"``/``"out"`` for the whole result).
        error: normwise relative error against the reference (None when not compared).
        passed: within tolerance, in the right shape.
        status: ``"pass"`` or one of :data:`VERDICTS`.
        message: what went wrong, one line.
        diagnosis: the mistake it looks like, in words.
        mistake: that mistake's short name, for autograders.
        group: rows with the same group say the same thing (reported once, with their cases).
        got, expected, index: for a wrong value, where it is furthest from the reference.
    """

    function: str
    case: str
    output: str
    error: float | None
    passed: bool
    status: str = "pass"
    message: str = ""
    diagnosis: str = ""
    mistake: str = ""
    group: str = ""
    got: str = ""
    expected: str = ""
    index: str = ""
    candidates: list[str] = field(default_factory=list)  # every mistake that matches
    value: object = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict:
        d = asdict(self)
        del d["value"], d["group"], d["candidates"]
        if d["error"] is not None and not np.isfinite(d["error"]):
            d["error"] = None
        return d


def name_mistake(row: Row, name: str) -> None:
    """Say on ``row`` that it looks like the mistake ``name``."""
    m = MISTAKES[name]
    row.mistake, row.diagnosis = name, f"looks like {m.title}: {m.description}"
    row.group = f"mistake:{name}"


@dataclass
class Finding:
    """What a function's failing rows say, once: ``text`` on ``cases``."""

    text: str
    cases: list[str]
    mistake: str = ""
    detail: str = ""
    where: str = ""  # the cases in words: "on every case", "on case G=1"

    def sentence(self) -> str:
        """``"looks like eps outside the square root (on every case): ..."``."""
        if self.mistake:
            m = MISTAKES[self.mistake]
            return f"looks like {m.title} ({self.where}): {m.description}"
        return f"{self.text} ({self.where})" if self.where else self.text


def _cases_text(cases: list[str], n_cases: int) -> str:
    if len(cases) >= n_cases > 1:
        return "on every case"
    return ("on case " if len(cases) == 1 else "on cases ") + ", ".join(cases)


@dataclass
class FunctionReport:
    """One function's verdict and what explains it.

    Attributes:
        name: the function's name.
        verdict: ``"pass"`` or one of :data:`VERDICTS`.
        headline: the verdict in words (``"fix batchnorm_forward first"``, ``"wrong values
            on 3 of 7 cases"``).
        findings: each diagnosis or message once, with its cases.
        first_failure: the first failing case's numbers.
        notes: findings that do not fail the function (writes into its inputs, precision).
        rows: every row, for ``--verbose`` and JSON.
    """

    name: str
    verdict: str
    headline: str
    findings: list[Finding]
    first_failure: str
    notes: list[str]
    rows: list[Row]

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    @classmethod
    def from_rows(cls, name, rows, notes, *, forward: str, n_cases: int) -> FunctionReport:
        failing = [r for r in rows if not r.passed]
        # An ambiguous case is named as the function's other cases are.
        votes = Counter(c for r in failing for c in r.candidates)
        for r in failing:
            if len(r.candidates) > 1:
                name_mistake(r, max(r.candidates, key=lambda c: (votes[c], -r.candidates.index(c))))
        own = [r for r in failing if r.status != "depends"]
        if not rows:
            verdict = "not graded"
        elif not failing:
            verdict = "pass"
        else:
            verdict = min((r.status for r in own or failing), key=VERDICTS.index)
        failed_cases = list(dict.fromkeys(r.case for r in failing))
        share = f" on {len(failed_cases)} of {n_cases} cases" if failed_cases else ""
        if verdict == "pass":
            headline = "pass"
        elif verdict == "depends":
            headline = f"fix {forward} first"
        elif verdict in ("not implemented", "timed out"):
            headline = verdict
        elif verdict == "not graded":
            headline = "not graded" + (f": {rows[0].message}" if rows else "")
        else:
            headline = verdict + (" on every case" if len(failed_cases) >= n_cases > 1 else share)
        groups: dict[str, list[Row]] = {}
        for r in own if verdict != "not graded" else ():  # its headline says why
            groups.setdefault(r.group or r.message or r.status, []).append(r)
        findings = []
        for group in groups.values():
            first = group[0]
            cases = list(dict.fromkeys(r.case for r in group))
            text = first.diagnosis or first.message
            detail = first.message if first.diagnosis and first.message else ""
            findings.append(Finding(text, cases, first.mistake, detail))
        depends = list(dict.fromkeys(r.case for r in failing if r.status == "depends"))
        if depends:
            text = f"graded through {forward}'s cache, and {forward} is wrong there"
            findings.append(Finding(text, depends))
        for f in findings:
            f.where = _cases_text(f.cases, n_cases) if f.cases != ["-"] else ""
        numbers = next((r for r in own if r.got), None)
        first_failure = ""
        if numbers is not None:
            first_failure = (
                f"first failure: case {numbers.case}, {numbers.output}{numbers.index} = "
                f"{numbers.got}, expected {numbers.expected} (relative error "
                f"{numbers.error:.1e})"
            )
        return cls(name, verdict, headline, findings, first_failure, list(notes), rows)

    def lines(self, width: int = 79) -> list[str]:
        out = [f"{self.name:<28}{self.headline}"]

        def wrap(text, lead="  - "):
            return textwrap.wrap(
                text, width, initial_indent=lead, subsequent_indent=" " * len(lead)
            )

        for f in self.findings:
            out += wrap(f.sentence())
            if f.detail:
                out += wrap(f.detail, "    ")
        if self.first_failure:
            out += wrap(self.first_failure, "    ")
        for note in self.notes:
            out += wrap(note, "  * ")
        return out

    def to_json(self) -> dict:
        return {
            "function": self.name,
            "verdict": self.verdict,
            "passed": self.passed,
            "headline": self.headline,
            "findings": [
                {"text": f.text, "cases": f.cases, "mistake": f.mistake, "detail": f.detail}
                for f in self.findings
            ],
            "first_failure": self.first_failure,
            "notes": self.notes,
        }


def _verdict_word(verdict: str) -> str:
    return {"depends": "depend on their forward"}.get(verdict, verdict)


@dataclass
class Report:
    """Every graded function's verdict. Shown as text in a terminal (``str``), as an HTML
    table in a notebook (``_repr_html_``)."""

    source: str
    functions: list[FunctionReport]
    interrupted: bool = False

    @property
    def rows(self) -> list[Row]:
        return [r for f in self.functions for r in f.rows]

    @property
    def passed(self) -> bool:
        return not self.interrupted and all(f.passed for f in self.functions)

    def __getitem__(self, name: str) -> FunctionReport:
        for f in self.functions:
            if f.name == name:
                return f
        raise KeyError(f"{name!r} was not graded; graded: {[f.name for f in self.functions]}")

    def counts(self) -> dict[str, int]:
        return dict(Counter(f.verdict for f in self.functions))

    def summary(self) -> str:
        n = len(self.functions)
        counts = Counter(f.verdict for f in self.functions)
        parts = [f"{counts[v]} {_verdict_word(v)}" for v in ("pass", *VERDICTS) if counts[v]]
        text = f"{n} function{'s' if n != 1 else ''}: {', '.join(parts)}"
        if self.interrupted:
            text += " (interrupted: the rest was not graded)"
        return text

    def text(self, verbose: bool = False) -> str:
        lines = [f"normgrad check: {self.source}", ""] if self.source else []
        for f in self.functions:
            lines += f.lines()
        lines += ["", self.summary()]
        if verbose:
            lines += ["", format_rows(self.rows)]
        return "\n".join(lines)

    __str__ = text

    def __repr__(self) -> str:
        return self.text()

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "passed": self.passed,
            "interrupted": self.interrupted,
            "counts": self.counts(),
            "functions": [f.to_json() for f in self.functions],
            "rows": [r.to_json() for r in self.rows],
        }

    def json(self) -> str:
        return json.dumps(self.to_json(), indent=2)

    def gradescope(self) -> dict:
        """Gradescope's ``results.json``: one test per function, worth 1 point when it
        passes, its report as the test's output."""
        tests = [
            {
                "name": f.name,
                "score": 1.0 if f.passed else 0.0,
                "max_score": 1.0,
                "status": "passed" if f.passed else "failed",
                "output": "\n".join(f.lines()),
                "visibility": "visible",
            }
            for f in self.functions
        ]
        return {
            "score": float(sum(t["score"] for t in tests)),
            "output": self.summary(),
            "visibility": "visible",
            "tests": tests,
        }

    def _repr_html_(self) -> str:
        colour = {"pass": "#1a7f37"}
        rows = []
        for f in self.functions:
            details = [
                html.escape(x.sentence()) + (f"<br>{html.escape(x.detail)}" if x.detail else "")
                for x in f.findings
            ]
            if f.first_failure:
                details.append(f"<code>{html.escape(f.first_failure)}</code>")
            details += [html.escape(n) for n in f.notes]
            rows.append(
                "<tr>"
                f"<td style='text-align:left'><code>{html.escape(f.name)}</code></td>"
                f"<td style='text-align:left;color:{colour.get(f.verdict, '#cf222e')}'>"
                f"<b>{html.escape(f.headline)}</b></td>"
                f"<td style='text-align:left'>{'<br>'.join(details)}</td>"
                "</tr>"
            )
        head = (
            "<tr><th style='text-align:left'>function</th>"
            "<th style='text-align:left'>verdict</th><th style='text-align:left'>why</th></tr>"
        )
        caption = html.escape(self.summary())
        return f"<table><caption>{caption}</caption>{head}{''.join(rows)}</table>"


def format_rows(rows: list[Row]) -> str:
    """The per-case table (``--verbose``): passing outputs of one (function, case) share a
    line; failures get their own, followed by what went wrong and the mistake it looks like."""
    head = f"{'function':<28}{'case':<13}{'output':<20}{'rel error':>10}  result"
    lines = [head, "-" * len(head)]

    def err_text(e):
        return "-" if e is None else ("inf" if not np.isfinite(e) else f"{e:.1e}")

    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.function, r.case), []).append(r)
    for (function, case), group in groups.items():
        passing = [r for r in group if r.passed]
        if passing:
            outputs = "all" if len(passing) == len(group) else " ".join(r.output for r in passing)
            worst = max((r.error for r in passing if r.error is not None), default=None)
            lines.append(f"{function:<28}{case:<13}{outputs:<20}{err_text(worst):>10}  pass")
        notes: list[str] = []  # said once per (function, case), under its failures
        for r in group:
            if r.passed:
                continue
            lines.append(f"{function:<28}{case:<13}{r.output:<20}{err_text(r.error):>10}  FAIL")
            notes += [t for t in (r.message, r.diagnosis) if t and t not in notes]
        for text in notes:
            lines.append(
                textwrap.fill(text, 79, initial_indent="    -> ", subsequent_indent=" " * 7)
            )
    failed = sum(not r.passed for r in rows)
    lines += ["", f"{len(rows) - failed} outputs passed, {failed} failed"]
    return "\n".join(lines)
