"""Draw docs/_static/front.png, the figure on the README and the docs' front page.

    python docs/make_front_figure.py

The numbers are bench/README.md's "bench/fit.py: epochs of fit" table (digits, 64-128-64-10,
batch 32, float32, 1 thread, medians of 15 interleaved epochs); re-run bench/fit.py and update
them here when they change.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

MS_PER_EPOCH = {  # bench/README.md, bench/fit.py, digits, 1 thread
    "bp": 1.4,
    "NumPy loop": 2.9,
    "scikit-learn\nMLPClassifier": 9.9,
    "PyTorch\nDataLoader loop": 14.3,
}


def main(path=Path(__file__).parent / "_static" / "front.png"):
    names, values = list(MS_PER_EPOCH), list(MS_PER_EPOCH.values())
    fig, ax = plt.subplots(figsize=(6.4, 2.6), dpi=100)
    bars = ax.barh(names[::-1], values[::-1], color=["#999999"] * 3 + ["#1f77b4"])
    for bar, v in zip(bars, values[::-1]):
        ax.text(v + 0.2, bar.get_y() + bar.get_height() / 2, f"{v:g} ms  ({v / values[0]:.1f}x)",
                va="center", fontsize=9)
    ax.set_xlim(0, max(values) * 1.35)
    ax.set_xlabel("ms per epoch of training (digits 64-128-64-10, batch 32, 1 thread)")
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(path)
    return path


if __name__ == "__main__":
    print(main())
