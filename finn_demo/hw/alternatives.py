"""What would fit when the design does not: other boards, and settings that fit this board.

The boards FINN knows on which this export fits, and the bit-width settings of the benchmark's
FINN rows that fit the board asked for.

The boards come from the designs the fit already tried (fit.search: its frame rates from
SetFolding's least parallel design up), each re-placed for every board's budget (fit.fits_budget):
arithmetic on the build's own estimates, no new FINN build. They are estimates for the build's
part; a board of another family (the Zynq-7000 Pynq boards) specializes some layers differently,
so `finn_build.py --board=NAME` confirms. The settings come from the benchmark's FINN rows
(results/finn.csv, measured on its 224x224 MobileNetV2 by bench/finn_estimates.py), which the
command line reads and hands in.
"""
from finn_demo.hw import boards, fit


def fastest_per_board(tried, limits):
    """{board: frames/s of the fastest tried design that fits it} for every board FINN knows on
    which one of `tried` fits, its budget taken with `limits` (boards.parse_limits')."""
    fastest = {}
    by_speed = sorted(tried, key=lambda design: -design.fps)
    for board in boards.BOARDS:
        budget = boards.budget(board, limits)
        design = next((design for design in by_speed if fit.fits_budget(design, budget)), None)
        if design is not None:
            fastest[board] = round(design.fps)
    return fastest


def fitting_settings(finn_rows, board):
    """[(bits, frames/s, demo flags)] of the benchmark's FINN rows (dicts of results/finn.csv's
    columns) that fit `board`, fastest first (the last row of a setting counts)."""
    rows = {row["bits"]: row for row in finn_rows if row["board"] == board}
    fitting = [(row["bits"], int(float(row["estimated_fps"])), row["row_flags"])
               for row in rows.values() if row.get("fits") == "yes"]
    return sorted(fitting, key=lambda setting: -setting[1])


def what_would_fit(fits_per_board, settings, board):
    """The lines after DOES NOT FIT: the boards this export fits (`fits_per_board`,
    fastest_per_board's), and the `settings` (fitting_settings') that fit `board`."""
    by_rate = {}  # boards at the same frame rate (the same design) named together
    for name, fps in sorted(fits_per_board.items(), key=lambda item: (-item[1], item[0])):
        by_rate.setdefault(fps, []).append(name)
    others = [f"{', '.join(names)} ({fps} frames/s)" for fps, names in by_rate.items()]
    lines = [("fits, by this build's estimates: " + ", ".join(others)
              + "; confirm with finn_build.py --board=NAME") if others
             else "fits no board FINN knows, by this build's estimates"]
    if settings:
        lines.append(f"settings that fit {board} in the benchmark's FINN rows (results/finn.csv, "
                     "MobileNetV2 at 224x224); export with finn_mobilenetv2.py and:")
        lines += [f"  {bits} ({fps} frames/s): {flags or '(the default flags)'}"
                  for bits, fps, flags in settings]
    return lines
