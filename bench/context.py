"""What each benchmark section's run and render get (bench/sections.py): one object, the same
fields for every section."""
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Context:
    """args: the benchmark's flags; passed: the demo flags every demo run gets (the pass-through
    flags with the benchmark's defaults); common: the key columns every row of the demo's model
    shares (its flags, its model hash); out: the output folder; path: this section's CSV in it;
    rows: the rows of the sections before this one, by name (this run's, or the rows their CSV
    keeps where this run left them off), which later sections build on (seeds and FINN: grid)."""
    args: dict
    passed: list
    common: dict
    out: Path
    path: Path = None
    rows: dict = field(default_factory=dict)

    @property
    def digits(self):
        """Whether the demo runs on its digits model (no --data_dir)."""
        return not any(arg.startswith("--data_dir=") for arg in self.passed)

    @property
    def grid_rows(self):
        return self.rows.get("grid", [])
