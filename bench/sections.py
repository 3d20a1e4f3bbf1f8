"""The benchmark's sections, declared once, in RESULTS.md's order.

benchmark.main runs and renders them in this order, `python -m bench.stale` checks each one's
code, and each one's code hash follows its module's imports (bench/section_code.py). Adding a
section means one entry here plus its own module with a run and a render.
"""
from dataclasses import dataclass
from typing import Callable

from bench import (
    checks224, finn_estimates, gpxq_speed, grid, imagenet_times, qat, qat_time, seeds, speed)
from bench.report import section_lines


@dataclass(frozen=True)
class Section:
    """One section of the benchmark.

    name: how later sections find its rows (Context.rows); csv: its CSV in out_dir; run(context)
    -> (rows, failures): measures or resumes its rows (bench/context.py Context); render(rows,
    context) -> its RESULTS.md lines; flags: the benchmark flags that switch it on (it runs when
    all of them are set; left off, RESULTS.md shows the rows its CSV keeps); digits_only: run
    and shown only on the digits model; lines(render, ran, rows, context): how its rows become
    RESULTS.md lines (report.section_lines, or the section's own).
    """
    name: str
    csv: str
    run: Callable
    render: Callable
    flags: tuple
    digits_only: bool = False
    lines: Callable = section_lines

    def ran(self, args):
        """Whether this run measures the section: every one of its flags is set."""
        return all(args[flag] for flag in self.flags)

    @property
    def modules(self):
        """The section's own module, whose imports make its code (bench/section_code.py)."""
        return (self.run.__module__,)


def rows_only(text):
    """A render from a text function of the rows alone."""
    return lambda rows, context: text(rows)


SECTIONS = (
    Section("grid", "benchmark.csv", grid.grid_section, grid.grid_render, ("bits", "ptq"),
            lines=grid.grid_lines),
    Section("seeds", "seeds.csv", seeds.seeds_section, seeds.seeds_render, ("seeds", "seeds_bits"),
            digits_only=True),  # training seeds are the digits model's
    Section("qat", "qat.csv", qat.qat_section, rows_only(qat.qat_text), ("qat_bits", "qat_ptq"),
            digits_only=True),  # on the digits models of the seeds section
    Section("qat_time", "qat_time.csv", qat_time.qat_time_section, rows_only(qat_time.qat_time_text),
            ("qat_time_devices",)),
    Section("finn", "finn.csv", finn_estimates.finn_section, finn_estimates.finn_render,
            ("finn_bits", "finn_boards")),
    Section("checks224", "checks224.csv", checks224.checks_section,
            rows_only(checks224.checks_text), ("checks_bits",)),
    Section("gpxq_speed", gpxq_speed.CSV_NAME, gpxq_speed.gpxq_section,
            rows_only(gpxq_speed.gpxq_text), ("gpxq",)),
    Section("speed", "speed.csv", speed.speed_section, speed.speed_render, ("speed",)),
    Section("imagenet_times", "imagenet_times.csv", imagenet_times.imagenet_section,
            rows_only(imagenet_times.imagenet_text), ("imagenet_calib_sizes",)),
)


def section(name):
    """The section called `name`."""
    return next(entry for entry in SECTIONS if entry.name == name)
