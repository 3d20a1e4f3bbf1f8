"""The FPGA boards FINN knows: part, resources and the budget a design may use.

A board is one FINN has both a part for (`finn.util.basic.pynq_part_map`, `alveo_part_map`)
and a resource table for (`finn.util.platforms.platforms`). Its budget is FINN's own: the
resources left for the accelerator (`Platform.guide_resources`, which takes off the Alveo
boards' DDR controllers), summed over the part's SLRs, times FINN's utilization limits
(`DEFAULT_RES_LIMITS`: 70% of LUTs, 80% of BRAM, URAM and DSPs).
"""
from finn.util.basic import alveo_part_map, pynq_part_map
from finn.util.platforms import DEFAULT_RES_LIMITS, platforms

RESOURCES = ("LUT", "BRAM_18K", "URAM", "DSP")
PLATFORM_ORDER = ("LUT", "FF", "BRAM_18K", "URAM", "DSP")  # FINN's order in its tables
PARTS = {**pynq_part_map, **alveo_part_map}
BOARDS = sorted(name for name in platforms if name in PARTS)
DEFAULT_LIMITS = {name: float(limit) for name, limit in zip(PLATFORM_ORDER, DEFAULT_RES_LIMITS)
                  if name in RESOURCES}


def is_zynq(board):
    """Zynq boards (FINN's pynq_part_map) need runtime-writeable weights for URAM."""
    return board in pynq_part_map


def available(board):
    """{resource: count} the accelerator may occupy on `board`, before utilization limits."""
    platform = platforms[board]()
    totals = [sum(column) for column in zip(*platform.guide_resources)]
    counts = dict(zip(PLATFORM_ORDER, totals))
    return {name: int(counts[name]) for name in RESOURCES}


def budget(board, limits):
    """{resource: count} a design may use: what `board` has times `limits` ({resource: share})."""
    return {name: int(count * limits[name]) for name, count in available(board).items()}


def parse_limits(text):
    """`LUT=0.7,BRAM_18K=0.8` -> FINN's defaults with those replaced; ValueError names the fault."""
    limits = dict(DEFAULT_LIMITS)
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        if name not in RESOURCES:
            raise ValueError(f"unknown resource {name!r} (one of {', '.join(RESOURCES)})")
        try:
            share = float(value)
        except ValueError:
            raise ValueError(f"{name}={value!r} is not a number") from None
        if not 0 < share <= 1:
            raise ValueError(f"{name}={share} must be in (0, 1]")
        limits[name] = share
    return limits
