"""PyTorch's side of `cargo run --release -p model --example block_times`: each op of one
ViT-S/16 block (batch 8, 197 tokens, width 384, 6 heads) timed alone on the CPU, best of 20
after 3 warm-up calls, and the whole block timed the same way (`bench/NOTES.md`).

    python bench/torch_block_ops.py [--threads 2]
"""
import argparse
import time

import torch


def best_ms(f, reps=20):
    for _ in range(3):
        f()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    b, n, d, h = 8, 197, 384, 6
    x = torch.randn(b, n, d)
    ln1, ln2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
    qkv, proj = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
    fc1, fc2, act = torch.nn.Linear(d, 4 * d), torch.nn.Linear(4 * d, d), torch.nn.GELU()
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def heads(t):
        return t.reshape(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4).unbind(0)

    def block():
        q, k, v = heads(qkv(ln1(x)))
        x1 = x + proj(sdpa(q, k, v).transpose(1, 2).reshape(b, n, d))
        return x1 + fc2(act(fc1(ln2(x1))))

    with torch.no_grad():
        y = ln1(x)
        q, k, v = heads(qkv(y))
        o = sdpa(q, k, v).transpose(1, 2).reshape(b, n, d)
        u = fc1(y)
        g = act(u)
        rows = [
            ("ln1", lambda: ln1(x)),
            ("qkv", lambda: qkv(y)),
            ("attention", lambda: sdpa(q, k, v)),
            ("proj+residual", lambda: x + proj(o)),
            ("fc1", lambda: fc1(y)),
            ("gelu", lambda: act(u)),
            ("fc2+residual", lambda: x + fc2(g)),
            ("block", block),
        ]
        for name, f in rows:
            print(f"{name:>15}: {best_ms(f):6.2f} ms")


if __name__ == "__main__":
    main()
