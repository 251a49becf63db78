#!/usr/bin/python3
"""Render a terminal capture with ANSI colours (`tmux capture-pane -e -p`) to a PNG.

    tmux capture-pane -e -p -t SESSION | scripts/ansi-to-png.py out.png [--bg '#1c1c1c']

Needs python3-pil and the DejaVu fonts (Debian: python3-pil fonts-dejavu-core).
Cells are drawn on a fixed grid; SGR colours (16, 256, RGB), bold, dim and
reverse are honoured; other escapes are ignored.
"""
import re
import sys

from PIL import Image, ImageDraw, ImageFont

FONT_DIR = "/usr/share/fonts/truetype/dejavu/"
SIZE = 15

BASE16 = [
    (0x1c, 0x1c, 0x1c), (0xcd, 0x31, 0x31), (0x0d, 0xbc, 0x79), (0xe5, 0xe5, 0x10),
    (0x24, 0x72, 0xc8), (0xbc, 0x3f, 0xbc), (0x11, 0xa8, 0xcd), (0xcc, 0xcc, 0xcc),
    (0x66, 0x66, 0x66), (0xf1, 0x4c, 0x4c), (0x23, 0xd1, 0x8b), (0xf5, 0xf5, 0x43),
    (0x3b, 0x8e, 0xea), (0xd6, 0x70, 0xd6), (0x29, 0xb8, 0xdb), (0xf5, 0xf5, 0xf5),
]


def xterm256(n):
    if n < 16:
        return BASE16[n]
    if n < 232:
        n -= 16
        steps = [0, 95, 135, 175, 215, 255]
        return (steps[n // 36], steps[(n // 6) % 6], steps[n % 6])
    v = 8 + (n - 232) * 10
    return (v, v, v)


def parse(text):
    """Yield rows of (char, fg, bg, bold, dim, reverse)."""
    rows = []
    for line in text.split("\n"):
        fg = bg = None
        bold = dim = rev = False
        row = []
        for token in re.split(r"(\x1b\[[0-9;:]*[A-Za-z])", line):
            if token.startswith("\x1b["):
                if not token.endswith("m"):
                    continue
                codes = [int(c) if c else 0 for c in re.split(r"[;:]", token[2:-1])] or [0]
                i = 0
                while i < len(codes):
                    c = codes[i]
                    if c == 0:
                        fg = bg = None
                        bold = dim = rev = False
                    elif c == 1:
                        bold = True
                    elif c == 2:
                        dim = True
                    elif c == 7:
                        rev = True
                    elif c == 22:
                        bold = dim = False
                    elif c == 27:
                        rev = False
                    elif 30 <= c <= 37:
                        fg = BASE16[c - 30]
                    elif 90 <= c <= 97:
                        fg = BASE16[c - 90 + 8]
                    elif 40 <= c <= 47:
                        bg = BASE16[c - 40]
                    elif 100 <= c <= 107:
                        bg = BASE16[c - 100 + 8]
                    elif c == 39:
                        fg = None
                    elif c == 49:
                        bg = None
                    elif c in (38, 48) and i + 1 < len(codes):
                        if codes[i + 1] == 5 and i + 2 < len(codes):
                            color = xterm256(codes[i + 2])
                            i += 2
                        elif codes[i + 1] == 2 and i + 4 < len(codes):
                            color = tuple(codes[i + 2:i + 5])
                            i += 4
                        else:
                            color = None
                        if c == 38:
                            fg = color
                        else:
                            bg = color
                    i += 1
            else:
                for ch in token:
                    row.append((ch, fg, bg, bold, dim, rev))
        rows.append(row)
    while rows and not rows[-1]:
        rows.pop()
    return rows


def main():
    out = sys.argv[1]
    default_bg = (0x1c, 0x1c, 0x1c)
    if "--bg" in sys.argv:
        h = sys.argv[sys.argv.index("--bg") + 1].lstrip("#")
        default_bg = tuple(int(h[i:i + 2], 16) for i in (0, 2, 4))
    default_fg = (0xd0, 0xd0, 0xd0)
    rows = parse(sys.stdin.read())
    mono = ImageFont.truetype(FONT_DIR + "DejaVuSansMono.ttf", SIZE)
    mono_bold = ImageFont.truetype(FONT_DIR + "DejaVuSansMono-Bold.ttf", SIZE)
    fallback = ImageFont.truetype(FONT_DIR + "DejaVuSans.ttf", SIZE - 2)
    missing = bytes(mono.getmask("\uffff"))
    cw = round(mono.getlength("M"))
    ascent, descent = mono.getmetrics()
    ch_h = ascent + descent
    cols = max(len(r) for r in rows)
    img = Image.new("RGB", (cols * cw + 16, len(rows) * ch_h + 16), default_bg)
    draw = ImageDraw.Draw(img)
    for y, row in enumerate(rows):
        for x, (ch, fg, bg, bold, dim, rev) in enumerate(row):
            fg = fg or default_fg
            bg = bg or default_bg
            if rev:
                fg, bg = bg, fg
            if dim:
                fg = tuple((a + b) // 2 for a, b in zip(fg, bg))
            px, py = 8 + x * cw, 8 + y * ch_h
            if bg != default_bg:
                draw.rectangle([px, py, px + cw - 1, py + ch_h - 1], fill=bg)
            if ch == " ":
                continue
            font = mono_bold if bold else mono
            if bytes(mono.getmask(ch)) == missing:
                font = fallback
            draw.text((px, py), ch, font=font, fill=fg)
    img.save(out)


if __name__ == "__main__":
    main()
