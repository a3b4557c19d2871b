"""One self-contained HTML page for a report: its tables, figures and sample grids inline (PNG as
data URIs), links to every file written beside it. No external resources, so the page opens
from a laptop, a cluster's file system or an e-mail attachment alike.

A small inline script marks ``<body data-images-ok="true|false">`` once every image has
decoded, which the browser test reads back.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path

from robustdd.runtime import open_atomic

__all__ = ["write_html_report"]

TABLE_ORDER = (("table1", "White-box robustness (ROME Table 1 layout)"),
               ("table2", "Black-box robustness (ROME Table 2 layout)"),
               ("shift", "Distribution shift (RDD Table 1 layout)"),
               ("accuracy", "Clean and attacked accuracy"),
               ("accuracy_per_seed", "Clean and attacked accuracy, per seed"))
FIGURES = (("curves", "Robustness curves"), ("transfer_heatmap", "Transfer heatmap"))

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; }
table.rdd-table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
table.rdd-table caption { font-weight: bold; text-align: left; padding: 0.3em 0; }
table.rdd-table th, table.rdd-table td { border: 1px solid #bbb; padding: 0.25em 0.6em; }
table.rdd-table th { background: #eef; } td.num { text-align: right; } td.key { text-align: left; }
p.note { font-size: 0.85em; color: #555; font-style: italic; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
figure img { border: 1px solid #ccc; max-width: 100%; image-rendering: pixelated; }
figcaption { font-size: 0.85em; color: #444; }
"""

CHECK_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.every(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute('data-images-ok', ok ? 'true' : 'false');
});
"""


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _figure(path: Path, caption: str, width: int | None = None) -> str:
    size = f' width="{width}"' if width else ""
    return (f'<figure><img alt="{escape(caption)}" src="{_data_uri(path)}"{size}>'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def write_html_report(out_dir: str | Path, written: Mapping[str, Sequence[Path]], *,
                      title: str, summary: str = "",
                      sample_grids: Sequence[tuple[str, Path]] = ()) -> Path:
    """Write ``out_dir/index.html`` from ``write_report``'s output (``written``: paths by
    output name; tables need their ``.html`` fragments) and optional ``(caption, png)`` grids
    of distilled images. Returns the page's path."""
    out = Path(out_dir)
    parts = [f"<h1>{escape(title)}</h1>",
             f'<p class="note">{escape(summary)} Generated {time.strftime("%Y-%m-%d %H:%M")} by '
             "robustdd.</p>"]
    for name, heading in TABLE_ORDER:
        fragment = next((p for p in written.get(name, []) if p.suffix == ".html"), None)
        if fragment is not None:
            parts += [f"<h2>{escape(heading)}</h2>", fragment.read_text(encoding="utf-8")]
    for name, heading in FIGURES:
        png = next((p for p in written.get(name, []) if p.suffix == ".png"), None)
        if png is not None:
            parts += [f"<h2>{escape(heading)}</h2>", _figure(png, heading)]
    if sample_grids:
        parts.append("<h2>Distilled images (one row per class)</h2>")
        parts += [_figure(png, caption, width=320) for caption, png in sample_grids]
    files = sorted({p for paths in written.values() for p in paths if p.suffix != ".html"})
    if files:
        links = "".join(f'<li><a href="{escape(str(p.relative_to(out)))}">'
                        f"{escape(str(p.relative_to(out)))}</a></li>"
                        for p in files if p.is_relative_to(out))
        parts += ["<h2>Files</h2>", f"<ul>{links}</ul>"]
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(parts) + f"\n<script>{CHECK_SCRIPT}</script>\n</body></html>\n")
    path = out / "index.html"
    with open_atomic(path) as handle:
        handle.write(page)
    return path
