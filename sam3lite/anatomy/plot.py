"""Minimal line and bar charts drawn with Pillow, so the report needs no plotting library.

Pillow is already a dependency (image loading); the report's charts (histograms, curves, log-log
rank-frequency) need only axes, ticks, lines, bars and a legend, which fit in this one file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

PALETTE = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
]
GREY = (190, 190, 190)
BLACK = (30, 30, 30)
_MARGIN = (62, 30, 16, 46)  # left, top, right, bottom: room for tick labels, title and axis labels


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # scalable built-in font (Pillow >= 10.1 with FreeType)
    except (TypeError, OSError):
        return ImageFont.load_default()


def _nice_step(span: float, target: int = 6) -> float:
    """A 1/2/5 x 10^k step giving about ``target`` ticks over ``span``."""
    raw = span / target
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)


def _label(v: float) -> str:
    if v != 0 and (abs(v) >= 1e4 or abs(v) < 1e-3):
        mantissa, exp = f"{v:.0e}".split("e")
        return f"{mantissa}e{int(exp)}"
    return f"{v:g}"


@dataclass
class Axes:
    """One chart. Add series, then ``render()`` (an image) or ``save(path)``."""

    title: str = ""
    xlabel: str = ""
    ylabel: str = ""
    xlog: bool = False
    ylog: bool = False
    size: tuple[int, int] = (720, 420)
    xlim: tuple[float, float] | None = None
    ylim: tuple[float, float] | None = None
    font_size: int = 13
    integer_x: bool = False  # x ticks on whole numbers only (counts)
    xticks: list[float] | None = None  # explicit x ticks instead of automatic ones
    legend: str = "upper right"  # or "lower right", "upper left", "center right"
    _series: list[tuple] = field(default_factory=list)

    def line(self, xs, ys, color=None, width: int = 2, label: str = "", dash: bool = False, marker: bool = False):
        color = color or PALETTE[len(self._series) % len(PALETTE)]
        self._series.append(("line", list(map(float, xs)), list(map(float, ys)), color, width, label, dash, marker))
        return self

    def bars(self, xs, heights, color=None, label: str = "", width: float = 0.8):
        """Bars centred on xs, ``width`` in data units."""
        color = color or PALETTE[len(self._series) % len(PALETTE)]
        self._series.append(("bars", list(map(float, xs)), list(map(float, heights)), color, width, label))
        return self

    def vline(self, x: float, color=GREY, label: str = "", dash: bool = True):
        self._series.append(("vline", [float(x)], [], color, 1, label, dash))
        return self

    def hline(self, y: float, color=GREY, label: str = "", dash: bool = True):
        self._series.append(("hline", [], [float(y)], color, 1, label, dash))
        return self

    # ------------------------------------------------------------------------------------------

    def _limits(self) -> tuple[float, float, float, float]:
        xs = [x for s in self._series for x in s[1]]
        ys = [y for s in self._series for y in s[2]]
        if self.xlog:
            xs = [x for x in xs if x > 0]
        if self.ylog:
            ys = [y for y in ys if y > 0]
        xs, ys = xs or [0.0, 1.0], ys or [0.0, 1.0]
        bar_pad = max((s[4] / 2 for s in self._series if s[0] == "bars"), default=0.0)
        x0, x1 = self.xlim or (min(xs) - bar_pad, max(xs) + bar_pad)
        if self.ylim:
            y0, y1 = self.ylim
        elif self.ylog:
            y0, y1 = min(ys), max(ys)
        else:
            y0, y1 = min(0.0, min(ys)), max(ys) * 1.05 or 1.0
        if self.xlog and not self.xlim:
            x0, x1 = 10 ** math.floor(math.log10(x0)), 10 ** math.ceil(math.log10(x1))
        if self.ylog and not self.ylim:
            y0, y1 = 10 ** math.floor(math.log10(y0)), 10 ** math.ceil(math.log10(y1))
        return x0, x1 if x1 > x0 else x0 + 1, y0, y1 if y1 > y0 else y0 + 1

    def render(self) -> Image.Image:
        width, height = self.size
        img = Image.new("RGB", self.size, "white")
        draw = ImageDraw.Draw(img)
        font = _font(self.font_size)
        left, top, right, bottom = _MARGIN
        pw, ph = width - left - right, height - top - bottom
        x0, x1, y0, y1 = self._limits()
        fx = (lambda v: math.log10(v)) if self.xlog else float
        fy = (lambda v: math.log10(v)) if self.ylog else float

        def px(x: float) -> float:
            return left + (fx(max(x, 1e-300) if self.xlog else x) - fx(x0)) / (fx(x1) - fx(x0)) * pw

        def py(y: float) -> float:
            return top + ph - (fy(max(y, 1e-300) if self.ylog else y) - fy(y0)) / (fy(y1) - fy(y0)) * ph

        # Grid and ticks.
        for v in self.xticks or _ticks(x0, x1, self.xlog, min_step=1.0 if self.integer_x else 0.0):
            draw.line([(px(v), top), (px(v), top + ph)], fill=(235, 235, 235))
            draw.text((px(v), top + ph + 4), _label(v), fill=BLACK, font=font, anchor="mt")
        for v in _ticks(y0, y1, self.ylog):
            draw.line([(left, py(v)), (left + pw, py(v))], fill=(235, 235, 235))
            draw.text((left - 5, py(v)), _label(v), fill=BLACK, font=font, anchor="rm")
        draw.rectangle([left, top, left + pw, top + ph], outline=BLACK)

        # Series, clipped to the plot area by drawing on a separate layer.
        layer = Image.new("RGBA", self.size, (0, 0, 0, 0))
        ld = ImageDraw.Draw(layer)
        for s in self._series:
            kind, xs, ys, color = s[:4]
            if kind == "bars":
                for x, h in zip(xs, ys, strict=True):
                    base = y0 if self.ylog else max(y0, 0.0)
                    if h > base:
                        box = [px(x - s[4] / 2), py(h), px(x + s[4] / 2), py(base)]
                        ld.rectangle([min(box[0], box[2] - 1), box[1], box[2], box[3]], fill=color)
            elif kind == "vline":
                _polyline(ld, [(px(xs[0]), top), (px(xs[0]), top + ph)], color, s[4], s[6])
            elif kind == "hline":
                _polyline(ld, [(left, py(ys[0])), (left + pw, py(ys[0]))], color, s[4], s[6])
            else:
                pts = [
                    (px(x), py(y))
                    for x, y in zip(xs, ys, strict=True)
                    if (x > 0 or not self.xlog) and (y > 0 or not self.ylog)
                ]
                _polyline(ld, pts, color, s[4], s[6])
                if s[7]:
                    for x, y in pts:
                        ld.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
        mask = Image.new("L", self.size, 0)
        ImageDraw.Draw(mask).rectangle([left + 1, top + 1, left + pw - 1, top + ph - 1], fill=255)
        clipped = Image.new("RGBA", self.size, (0, 0, 0, 0))
        clipped.paste(layer, (0, 0), mask)
        img.paste(clipped, (0, 0), clipped)

        # Labels and legend.
        draw.text((left + pw / 2, 6), self.title, fill=BLACK, font=_font(self.font_size + 2), anchor="mt")
        draw.text((left + pw / 2, height - 6), self.xlabel, fill=BLACK, font=font, anchor="mb")
        ylab = Image.new("RGBA", (ph, self.font_size + 6), (255, 255, 255, 0))
        ImageDraw.Draw(ylab).text((ph / 2, 0), self.ylabel, fill=BLACK, font=font, anchor="mt")
        rotated = ylab.rotate(90, expand=True)
        img.paste(rotated, (2, top), rotated)
        labelled = [(s[5], s[3], len(s) > 6 and s[6]) for s in self._series if s[5]]
        if labelled:
            line_h = self.font_size + 4
            box_w = max(draw.textlength(t, font=font) for t, _, _ in labelled) + 38
            box_h = line_h * len(labelled) + 6
            bx = left + 6 if "left" in self.legend else left + pw - box_w - 6
            by = {"upper": top + 6, "lower": top + ph - box_h - 6}.get(self.legend.split()[0], top + (ph - box_h) / 2)
            draw.rectangle([bx, by, bx + box_w, by + box_h], fill="white", outline=GREY)
            for i, (text, color, dash) in enumerate(labelled):
                y = by + 4 + i * line_h + line_h / 2
                _polyline(draw, [(bx + 5, y), (bx + 28, y)], color, 3, dash)
                draw.text((bx + 33, y), text, fill=BLACK, font=font, anchor="lm")
        return img

    def save(self, path: str | Path) -> None:
        self.render().save(path, optimize=True)


def _ticks(lo: float, hi: float, log: bool, min_step: float = 0.0) -> list[float]:
    if log:
        first, last = math.ceil(math.log10(lo) - 1e-9), math.floor(math.log10(hi) + 1e-9)
        step = max(1, math.ceil((last - first + 1) / 8))
        return [10.0**k for k in range(first, last + 1, step)]
    step = max(_nice_step(hi - lo), min_step)
    start = math.ceil(lo / step - 1e-9) * step
    count = int(math.floor((hi - start) / step + 1e-9)) + 1
    return [round(start + i * step, 10) for i in range(count)]


def _polyline(draw: ImageDraw.ImageDraw, pts: list[tuple[float, float]], color, width: int, dash: bool) -> None:
    if len(pts) < 2:
        return
    if not dash:
        draw.line(pts, fill=color, width=width, joint="curve")
        return
    for (xa, ya), (xb, yb) in zip(pts, pts[1:], strict=False):
        length = math.hypot(xb - xa, yb - ya)
        for s in range(0, int(length), 10):  # 6 px on, 4 px off
            t0, t1 = s / length, min(s + 6, length) / length
            draw.line(
                [(xa + t0 * (xb - xa), ya + t0 * (yb - ya)), (xa + t1 * (xb - xa), ya + t1 * (yb - ya))],
                fill=color,
                width=width,
            )


def grid(charts: list[Axes], cols: int) -> Image.Image:
    """Charts (same size) side by side, ``cols`` per row."""
    w, h = charts[0].size
    rows = math.ceil(len(charts) / cols)
    img = Image.new("RGB", (w * cols, h * rows), "white")
    for i, chart in enumerate(charts):
        img.paste(chart.render(), ((i % cols) * w, (i // cols) * h))
    return img
