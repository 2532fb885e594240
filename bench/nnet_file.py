"""An NNet file read as plain Python lists, for the benchmark scripts (independent of libvram's
own reader): layer sizes, the four normalisation rows (min, max, mean, range; inputs only)
and each layer's weight rows and biases as written."""


def read(path):
    with open(path) as f:
        rows = [[float(t) for t in line.split(",") if t.strip()] for line in f if not line.startswith("//")]
    sizes = [int(v) for v in rows[1]]
    norm = [rows[k][: sizes[0]] for k in (3, 4, 5, 6)]
    at, layers = 7, []
    for layer in range(len(sizes) - 1):
        n = sizes[layer + 1]
        w = rows[at : at + n]
        b = [r[0] for r in rows[at + n : at + 2 * n]]
        at += 2 * n
        layers.append((w, b))
    return sizes, norm, layers
