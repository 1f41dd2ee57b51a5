"""Run a notebook's code cells in one namespace, without Jupyter.

`python tests/notebook_runner.py NOTEBOOK.ipynb --write` also stores each cell's printed
text and figures (PNG) as the cell's outputs, so the notebook shows its pictures when
viewed without running it. The test suite imports :func:`run` to execute the notebooks.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import sys


def run(path: str) -> dict:
    """Execute every code cell of the notebook at `path`; return it with outputs filled."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(path) as handle:
        notebook = json.load(handle)
    namespace: dict = {"__name__": "__main__"}
    count = 0
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        count += 1
        text = io.StringIO()
        with contextlib.redirect_stdout(text):
            exec(compile("".join(cell["source"]), f"{path}[{count}]", "exec"), namespace)
        outputs = []
        if text.getvalue():
            outputs.append({"name": "stdout", "output_type": "stream", "text": text.getvalue()})
        for number in plt.get_fignums():
            png = io.BytesIO()
            plt.figure(number).savefig(png, format="png", dpi=72, bbox_inches="tight")
            data = {"image/png": base64.b64encode(png.getvalue()).decode("ascii")}
            outputs.append({"output_type": "display_data", "data": data, "metadata": {}})
        plt.close("all")
        cell["outputs"] = outputs
        cell["execution_count"] = count
    return notebook


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook")
    parser.add_argument("--write", action="store_true", help="store the outputs in the file")
    args = parser.parse_args()
    notebook = run(args.notebook)
    if args.write:
        with open(args.notebook, "w") as handle:
            json.dump(notebook, handle, indent=1)
            handle.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
