"""A check's outcome (CheckResult) and a file's report (Report): what every check returns."""
from dataclasses import dataclass, field

NUMERICAL_CHECKS = ("equivalence", "finn")  # the checks that run the graph on images


@dataclass
class CheckResult:
    """One check's outcome: status is "pass", "fail" or "skipped"; offenders name the breaking nodes."""
    name: str
    status: str
    summary: str
    offenders: list = field(default_factory=list)
    figures: dict = field(default_factory=dict)

    @property
    def passed(self):
        return self.status == "pass"

    @property
    def failed(self):
        return self.status == "fail"

    def __str__(self):
        lines = [f"  {self.status[:4].upper():4} {self.name:12} {self.summary}"]
        lines += [f"{'':20}{offender}" for offender in self.offenders[:5]]
        if len(self.offenders) > 5:
            lines.append(f"{'':20}... and {len(self.offenders) - 5} more")
        return "\n".join(lines)


@dataclass
class Report:
    """All checks of one file, by name; `ok` unless a check failed (skipped ones do not count,
    but a report whose numerical checks were all skipped says so instead of "OK")."""
    path: str
    checks: dict
    metadata: dict

    @property
    def ok(self):
        return not any(check.failed for check in self.checks.values())

    def __getitem__(self, name):
        return self.checks[name]

    def __str__(self):
        failed = [name for name, check in self.checks.items() if check.failed]
        numbers_checked = any(self.checks[name].passed for name in NUMERICAL_CHECKS
                              if name in self.checks)
        verdict = ("OK" if numbers_checked else "structure OK; numbers not checked (equivalence "
                   "and finn skipped)") if self.ok else f"FAILED ({', '.join(failed)})"
        return "\n".join([f"check_export {self.path}", *map(str, self.checks.values()),
                          f"  result: {verdict}"])


def passed_if_complete(name, offenders, total, nodes, prop):
    """Pass when all `total` nodes have the property, else fail naming the offenders."""
    if offenders:
        return CheckResult(name, "fail", f"{len(offenders)} of {total} {nodes} lack {prop}",
                           offenders)
    return CheckResult(name, "pass", f"all {total} {nodes} have {prop}")
