"""A CUDA torch model of >= 1 GiB sealed in place with vram.seal_module (same data_ptr, no copy),
verified, a bit flipped through torch caught and located; seal and verify times against
torch's own clone of the weights (the cost of the copy libvram avoids). Prints a Markdown report."""

import sys
import time

import torch

import vram

KEY = b"an example seal secret, 32 bytes"


def timed(f, runs=5):
    best = float("inf")
    for _ in range(runs):
        torch.cuda.synchronize()
        t = time.perf_counter()
        out = f()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best, out


def main():
    if not torch.cuda.is_available():
        print("SKIPPED: no CUDA device for torch")
        return 0
    layers = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    model = torch.nn.Sequential(*[torch.nn.Linear(4096, 4096) for _ in range(layers)]).cuda()
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    ctx = vram.Context(key=KEY, backend="cuda")
    t_seal, sealed = timed(lambda: vram.seal_module(ctx, model), runs=1)
    in_place = all(sealed.shards[n].data_ptr == p.data_ptr() for n, p in model.named_parameters())
    t_verify, report = timed(sealed.verify)
    intact = all(r.intact for r in report.values())
    t_clone, _ = timed(lambda: [p.detach().clone() for p in model.parameters()])
    name = "7.weight"
    with torch.no_grad():
        w = dict(model.named_parameters())[name]
        w.view(torch.int32).view(-1)[5_000_000] ^= 1 << 3
    report = sealed.verify()
    damaged = [n for n, r in report.items() if not r.intact]
    at = report[name].first_damaged_offset
    print(f"# vram.seal_module on {torch.cuda.get_device_name()} (torch {torch.__version__}, libvram {vram.version()})")
    print()
    print("| what | value |")
    print("|---|---|")
    print(f"| model | {layers} x Linear(4096, 4096), fp32, {len(sealed.shards)} tensors, {nbytes / 2**30:.2f} GiB |")
    print(f"| sealed in place (every shard's data_ptr is the parameter's) | {'yes' if in_place else 'NO'} |")
    print(f"| seal_module (hash on the GPU, records) | {t_seal * 1e3:.1f} ms ({nbytes / t_seal / 1e9:.0f} GB/s) |")
    print(f"| verify of every tensor, one batch | {t_verify * 1e3:.2f} ms ({nbytes / t_verify / 1e9:.0f} GB/s), intact: {'yes' if intact else 'NO'} |")
    print(f"| baseline: torch clone of every parameter (the copy not made) | {t_clone * 1e3:.2f} ms |")
    print(f"| one bit flipped with torch in {name} at byte {5_000_000 * 4} | damaged: {damaged}, first damaged region at byte {at} |")
    ok = in_place and intact and damaged == [name] and at == (5_000_000 * 4) // (1 << 20) * (1 << 20)
    print()
    print("verdict:", "OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
