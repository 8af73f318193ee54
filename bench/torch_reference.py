"""PyTorch reference for `cargo run --release -p experiments -- bench`.

Runs one benchmark phase and prints one JSON line {"seconds": median, "peak_mib": ...}.
The phases mirror the Rust ones on inputs of the same shapes:

  train_step_literal  the official RobustViT step: a hooked forward, one autograd.grad call per
                      block for the attention gradients, the relevance loss, a second plain
                      forward for the classification term, backward, AdamW (imagenet_finetune.py)
  train_step_single   the same loss with one forward and one autograd.grad call for all blocks
  infer_vit_s / infer_vit_b   model forward at batch 8, no grad
  eval_pipeline       ImageFolder + PIL Resize(256)/CenterCrop(224) + DataLoader + ViT-S forward
  eval_decode         the same DataLoader without the model (decode and preprocessing only)

Install: pip install torch torchvision timm   (the default CPU wheel is enough)
"""
import argparse
import json
import resource
import statistics
import time

import torch
import torch.nn.functional as F


def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_vit(name, num_classes=1000):
    import timm

    model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    model.train()
    return model


class Capture:
    """Replaces each block's attention forward with an explicit softmax whose output stays in
    the graph, as RobustViT's hooked model does."""

    def __init__(self, model):
        self.maps = []
        self.enabled = True
        for blk in model.blocks:
            blk.attn.forward = self._make(blk.attn)

    def _make(self, attn):
        def forward(x, attn_mask=None, **kwargs):
            b, n, c = x.shape
            qkv = attn.qkv(x).reshape(b, n, 3, attn.num_heads, c // attn.num_heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
            a = (q * attn.scale) @ k.transpose(-2, -1)
            a = a.softmax(dim=-1)
            if self.enabled:
                self.maps.append(a)
            x = (a @ v).transpose(1, 2).reshape(b, n, c)
            return attn.proj(x)

        return forward


def upsample_minmax(r, size):
    b, n = r.shape
    g = int(round(n ** 0.5))
    r = r.reshape(b, 1, g, g)
    r = F.interpolate(r, scale_factor=size // g, mode="bilinear")
    flat = r.reshape(b, -1)
    mn = flat.min(dim=1, keepdim=True).values
    mx = flat.max(dim=1, keepdim=True).values
    return ((flat - mn) / (mx - mn)).reshape(b, 1, size, size)


def relevance(maps, grads):
    b, h, n, _ = maps[0].shape
    r = torch.eye(n, device=maps[0].device).expand(b, n, n)
    for a, g in zip(maps, grads):
        cam = (g * a).clamp(min=0).mean(dim=1)
        r = r + torch.bmm(cam, r)
    return r[:, 0, 1:]


def losses(rel, masks, logits):
    rev = 1.0 - masks
    bg = F.mse_loss(rel * rev, torch.zeros_like(rel))
    fg = F.mse_loss(rel * masks, masks)
    seg = 2.0 * bg + 0.3 * fg
    pred = logits.argmax(dim=1)
    cls = F.cross_entropy(logits, pred)
    return 0.8 * seg + 0.2 * cls


def train_step(model, cap, opt, x, masks, targets, literal):
    opt.zero_grad()
    cap.maps.clear()
    cap.enabled = True
    logits = model(x)
    one_hot = F.one_hot(targets, logits.shape[1]).float()
    score = (one_hot * logits).sum()
    if literal:
        grads = [torch.autograd.grad(score, a, retain_graph=True)[0] for a in cap.maps]
    else:
        grads = list(torch.autograd.grad(score, cap.maps, retain_graph=True))
    rel = upsample_minmax(relevance(cap.maps, grads), x.shape[-1])
    if literal:
        cap.enabled = False
        logits = model(x)
    loss = losses(rel, masks, logits)
    loss.backward()
    opt.step()


def median_time(fn, runs, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--phase", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--images", default=None)
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--dtype", default="f32", choices=["f32", "bf16"], help="inference phases")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.device == "auto":
        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(a.device)
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32

    def timed(fn):
        def run():
            fn()
            if dev.type == "cuda":
                torch.cuda.synchronize()
        return median_time(run, a.runs)

    x = torch.randn(a.batch, 3, 224, 224).to(dev)
    if a.phase.startswith("train_step"):
        model = make_vit("vit_small_patch16_224").to(dev)
        cap = Capture(model)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=1e-4)
        masks = (torch.rand(a.batch, 1, 224, 224) > 0.5).float().to(dev)
        targets = torch.randint(0, 1000, (a.batch,)).to(dev)
        literal = a.phase == "train_step_literal"
        secs = timed(lambda: train_step(model, cap, opt, x, masks, targets, literal))
    elif a.phase in ("infer_vit_s", "infer_vit_b"):
        name = "vit_small_patch16_224" if a.phase == "infer_vit_s" else "vit_base_patch16_224"
        model = make_vit(name).eval().to(dev, dtype)
        xd = x.to(dtype)
        with torch.no_grad():
            secs = timed(lambda: model(xd))
    elif a.phase in ("eval_pipeline", "eval_decode"):
        import torchvision.transforms as T
        from torchvision.datasets import ImageFolder

        model = make_vit("vit_small_patch16_224").eval().to(dev, dtype) if a.phase == "eval_pipeline" else None
        tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])
        ds = ImageFolder(a.images, tf)

        def run():
            dl = torch.utils.data.DataLoader(ds, batch_size=a.batch, num_workers=a.threads)
            with torch.no_grad():
                for xb, _ in dl:
                    if model is not None:
                        model(xb.to(dev, dtype))

        secs = timed(run)
    else:
        raise SystemExit(f"unknown phase {a.phase}")
    print(json.dumps({"seconds": secs, "peak_mib": peak_mib()}))


if __name__ == "__main__":
    main()
