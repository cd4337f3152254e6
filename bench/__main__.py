"""``python -m bench`` (``make bench``): every benchmark table, also written to bench/results/."""

from pathlib import Path

from . import core

if __name__ == "__main__":
    tables = [core.main()]
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.md").write_text("\n\n".join(tables) + "\n")
