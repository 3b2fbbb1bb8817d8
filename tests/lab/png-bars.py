#!/usr/bin/env python3
"""png-bars.py PICTURE.png [--tolerance=N] [NAME=R,G,B ...]: does the picture show vivid's default test
pattern, 75 % colour bars (white, yellow, cyan, green, magenta, red, blue, black, left to right) over its
full height? Or, given NAME=R,G,B arguments, those bars instead, equally wide, left to right (the
passthrough test's H.264 and MJPEG samples, as `devroom h264-sample` describes them). A sampled pixel may be
off by TOLERANCE (48) per channel, or N: a tighter bound also catches a picture whose levels are shifted (a
full-range JPEG read as limited range is 10 and more off on light and saturated colours).

roomcast's synthetic test pattern has the same bars over the top three quarters only, with a grey band
below: sampling the bottom rows tells the camera's picture from the synthetic one. Exit 0 on a match;
prints what was sampled either way. Needs only the standard library (a minimal PNG reader)."""
import struct
import sys
import zlib

BARS = [("white", (191, 191, 191)), ("yellow", (191, 191, 0)), ("cyan", (0, 191, 191)),
        ("green", (0, 191, 0)), ("magenta", (191, 0, 191)), ("red", (191, 0, 0)),
        ("blue", (0, 0, 191)), ("black", (0, 0, 0))]
TOLERANCE = 48


def read_png(path):
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and color in (2, 6) and interlace == 0, "only 8-bit RGB/RGBA, not interlaced"
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(line)
        prev = line
    return width, height, lambda x, y: tuple(rows[y][x * bpp:x * bpp + 3])


def main():
    width, height, pixel = read_png(sys.argv[1])
    tolerance = TOLERANCE
    given = []
    for arg in sys.argv[2:]:
        if arg.startswith("--tolerance="):
            tolerance = int(arg.split("=", 1)[1])
        else:
            given.append(arg)
    # vivid writes text over its top rows; given bars are sampled from the top down
    bars, heights = BARS, (0.55, 0.7, 0.9)
    if given:
        bars = [(name, tuple(int(c) for c in rgb.split(","))) for name, rgb in (a.split("=") for a in given)]
        heights = (0.1, 0.3, 0.55, 0.7, 0.9)
    bad, seen, worst = [], [], 0
    for frac in heights:
        y = int(height * frac)
        row = []
        for i, (name, want) in enumerate(bars):
            x = int((i + 0.5) * width / len(bars))
            got = pixel(x, y)
            row.append("%s=%d,%d,%d" % ((name,) + got))
            off = max(abs(g - w) for g, w in zip(got, want))
            worst = max(worst, off)
            if off > tolerance:
                bad.append("%s bar at (%d,%d) is %s, want about %s" % (name, x, y, got, want))
        seen.append("y=%d: %s" % (y, " ".join(row)))
    if bad:
        print("%dx%d; %s; sampled %s" % (width, height, "; ".join(bad[:4]), " | ".join(seen)))
        sys.exit(1)
    print("%dx%d, %d colour bars at %d heights down to %d%% of the picture (the synthetic pattern has a grey band there),"
          " each channel within %d of the expected (at most %d off)" % (width, height, len(bars), len(heights), 90, tolerance, worst))


main()
