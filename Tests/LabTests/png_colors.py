# Counts a PNG's pixels near each given colour: python3 png_colors.py FILE RRGGBB[~purple] ...
# (a screenshot's check that every chart drew its bars). Decodes 8-bit RGB/RGBA PNGs with zlib.
import struct, sys, zlib

def pixels(path):
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height, ctype = 8, b"", 0, 0, 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and ctype in (2, 6) and interlace == 0, "unsupported PNG"
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    bpp = 4 if ctype == 6 else 3
    raw, stride, prev, out = zlib.decompress(idat), width * bpp, bytearray(width * bpp), []
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1: line[i] = (line[i] + a) & 255
            elif f == 2: line[i] = (line[i] + b) & 255
            elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out.append(bytes(line))
        prev = line
    return width, height, bpp, out

w, h, bpp, rows = pixels(sys.argv[1])
for spec in sys.argv[2:]:
    if spec == "purple":
        test = lambda r, g, b: b - g > 40 and r - g > 20
    else:
        want = tuple(int(spec[i:i + 2], 16) for i in (0, 2, 4))
        test = lambda r, g, b, want=want: abs(r - want[0]) <= 6 and abs(g - want[1]) <= 6 and abs(b - want[2]) <= 6
    count = 0
    for row in rows:
        for x in range(0, w * bpp, bpp):
            if test(row[x], row[x + 1], row[x + 2]): count += 1
    print(spec, count)
