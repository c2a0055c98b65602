"""Plot pieces the benchmark scripts share, so that every figure shows the same honesty marks.

A bar is a median; its error bar spans p10-p90 of the calls; a disturbed timing (`common.
is_disturbed`) is hatched and edged red; a value above the roofline is labelled `^`; legends
sit outside the axes, so they never cover a bar or the roofline line; and each figure has a
caption under it that says what the marks mean (the dashed target marks included).
matplotlib is imported by the caller's `figure()` call only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from common import ABOVE_ROOF, NOISY, is_disturbed

CAPTION = (f"Bars: medians; error bars: p10-p90 of the calls; hatched with a red edge: disturbed "
           f"(p90 > {NOISY} x p10, another process took the CPU: do not trust that bar).")
TARGET_CAPTION = "Short dashed black marks: the targets; a bar that reaches its mark meets it."
ROOF_CAPTION = (f"{ABOVE_ROOF} over a bar: above the streaming roofline, served from cache, "
                "not a kernel faster than memory.")


def figure(ncols: int, width: float, height: float) -> tuple[Any, Any]:
    """A figure with one row of `ncols` axes (Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(width, height), squeeze=False)


def spread_bar(ax: Any, x: float, value: float, lo: float, hi: float, width: float, *, color: str,
               disturbed: bool, label: str | None = None) -> None:
    """One bar at `value` with an error bar from `lo` to `hi`; hatched when `disturbed`."""
    ax.bar(x, value, width, color=color, label=label, hatch="///" if disturbed else None,
           edgecolor="red" if disturbed else color, linewidth=1.2 if disturbed else 0.0)
    ax.errorbar(x, value, yerr=[[max(value - lo, 0.0)], [max(hi - value, 0.0)]], fmt="none",
                ecolor="black", elinewidth=0.8, capsize=2)


def timing_bar(ax: Any, x: float, m: dict[str, Any], width: float, *, color: str, scale: float = 1.0,
               label: str | None = None) -> None:
    """A bar of `scale / time` or `time` units from a timing dict (median/p10/p90 in ms).

    With `scale` != 1 the bar is a throughput (`scale / ms`), so p90 gives the low end."""
    if scale == 1.0:
        spread_bar(ax, x, m["median_ms"], m["p10_ms"], m["p90_ms"], width, color=color,
                   disturbed=is_disturbed(m), label=label)
    else:
        spread_bar(ax, x, scale / m["median_ms"], scale / m["p90_ms"], scale / m["p10_ms"], width,
                   color=color, disturbed=is_disturbed(m), label=label)


def ratio_bar(ax: Any, x: float, base: dict[str, Any], ours: dict[str, Any], width: float, *, color: str,
              label: str | None = None) -> None:
    """The speed-up base / ours, its error bar from the extremes of both spreads."""
    value = base["median_ms"] / ours["median_ms"]
    lo, hi = base["p10_ms"] / ours["p90_ms"], base["p90_ms"] / ours["p10_ms"]
    spread_bar(ax, x, value, lo, hi, width, color=color, disturbed=is_disturbed(base) or is_disturbed(ours),
               label=label)


def mark_above(ax: Any, x: float, value: float) -> None:
    """Label a bar that exceeds the roofline."""
    ax.annotate(ABOVE_ROOF, (x, value), ha="center", va="bottom", fontsize=9, color="red")


def legend_outside(ax: Any, handles: Sequence[Any] | None = None, labels: Sequence[str] | None = None,
                   side: str = "below") -> None:
    """The legend below (or right of) the axes, so it covers neither bars nor reference lines."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    if side == "right":
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    else:
        ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, fontsize=7,
                  frameon=False)


def disturbed_handle() -> Any:
    """A legend entry for the disturbed hatch."""
    from matplotlib.patches import Patch

    return Patch(facecolor="white", edgecolor="red", hatch="///", label="disturbed (p90 > "
                 f"{NOISY} x p10)")


def save(fig: Any, path: Path, caption: Sequence[str]) -> None:
    """Caption under the axes, then write `path` through a temporary file renamed into place."""
    import matplotlib.pyplot as plt

    fig.tight_layout(rect=(0, 0.04 + 0.03 * len(caption), 1, 1))
    fig.text(0.01, 0.01, "\n".join(caption), fontsize=7, va="bottom", ha="left", wrap=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
