"""Clear the outputs and execution counts of the notebooks before committing them: ``make notebooks-clear``.

``tests/test_notebooks.py`` fails while a committed notebook holds outputs.
"""

import sys
from pathlib import Path

import nbformat


def clear(path: Path) -> bool:
    """Strip ``path`` in place; True if it changed."""
    nb = nbformat.read(path, as_version=4)
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
            cell.outputs, cell.execution_count, changed = [], None, True
    if changed:
        nbformat.write(nb, path)
    return changed


if __name__ == "__main__":
    paths = [Path(p) for p in sys.argv[1:]] or sorted(Path(__file__).parent.glob("*.ipynb"))
    for p in paths:
        print(f"{p}: {'cleared' if clear(p) else 'clean'}")
