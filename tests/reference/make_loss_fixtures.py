#!/usr/bin/python3
"""Writes losses.json: reference values and gradients for every distill loss.

Each loss is written here again, naively and independently of the C++ code, straight from
the formulas of docs/reference.md §2 (one-hot masks, explicit
loops, the reference's own order of operations), in float64 with Debian's python3-torch.
Gradients come from autograd on these formulas; where the reference's op sends no gradient
into the teacher (KL, soft-label CE, DKD) the teacher is detached, so its expected gradient
is zero.

    /usr/bin/python3 tests/reference/make_loss_fixtures.py tests/reference/losses.json
"""
import json
import math
import sys

import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)
gen = torch.Generator().manual_seed(20261127)


def randn(*shape, scale=2.0):
    return (torch.randn(*shape, generator=gen) * scale).requires_grad_()


def labels(n, c):
    return torch.randint(0, c, (n,), generator=gen)


def enc(t):
    t = t.detach()
    return {"shape": list(t.shape), "dtype": "int64" if t.dtype == torch.int64 else "float64",
            "data": t.flatten().tolist()}


# ---------------------------------------------------------------- formulas (docs/reference.md §2)

def one_hot(y, c):
    return F.one_hot(y.reshape(-1), c).to(torch.float64)


def kl_where_positive(p, log_p, log_q):
    # Paddle's KL op: label * (log label - input), skipping labels <= 0.
    return torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p))


def ref_kd(zs, zt, T):  # 2.5
    pt = F.softmax(zt.detach() / T, dim=1)
    log_ps = F.log_softmax(zs / T, dim=1)
    return T * T / zs.shape[0] * kl_where_positive(pt, torch.log(pt), log_ps).sum()


def ref_ce(x, label, eps):  # 2.2 (soft labels with eps: softmax first, our documented choice)
    c = x.shape[1]
    lsm = F.log_softmax(x, dim=1)
    if label.dtype == torch.int64:
        y = one_hot(label, c)
        if eps > 0:
            y = (1 - eps) * y + eps / c
    else:
        y = F.softmax(label.detach(), dim=1)
        if eps > 0:
            y = (1 - eps) * y + eps / c
    return (-(y * lsm).sum(dim=1)).mean()


def ref_dml(x, t, act, eps, sum_across):  # 2.3
    def a(v):
        if act == "softmax":
            return F.softmax(v, dim=-1)
        if act == "sigmoid":
            return torch.sigmoid(v)
        return v
    p, q = a(x), a(t)
    c = x.shape[-1]

    def k(u, v):
        return v * torch.log((v + eps) / (u + eps)) * c
    elem = (k(p, q) + k(q, p)) / 2
    if sum_across:
        return elem.sum(dim=-1).mean()
    return elem.mean()


def ref_distance(a, b, mode):  # 2.4
    d = a - b
    if mode == "l1":
        return d.abs().mean()
    if mode == "l2":
        return (d * d).mean()
    ad = d.abs()
    return torch.where(ad < 1, 0.5 * d * d, ad - 0.5).mean()


def ref_dkd(zs, zt, label, T, alpha, beta):  # 2.6
    zt = zt.detach()
    n, c = zs.shape
    tgt = zt.argmax(dim=1) if label is None else label
    G = one_hot(tgt, c)
    O = 1 - G
    ps, pt = F.softmax(zs / T, dim=1), F.softmax(zt / T, dim=1)
    bs = torch.stack([(ps * G).sum(1), (ps * O).sum(1)], dim=1)
    bt = torch.stack([(pt * G).sum(1), (pt * O).sum(1)], dim=1)
    tckd = T * T / n * (bt * (torch.log(bt) - torch.log(bs))).sum()
    pt2 = F.softmax(zt / T - 1000.0 * G, dim=1)
    lps2 = F.log_softmax(zs / T - 1000.0 * G, dim=1)
    nckd = T * T / n * kl_where_positive(pt2, torch.log(pt2), lps2).sum()
    return alpha * tckd + beta * nckd


def ref_dist(zs, zt, beta, gamma):  # 2.9
    ys, yt = F.softmax(zs, dim=-1), F.softmax(zt, dim=-1)

    def rho(a, b, dim):
        u = a - a.mean(dim=dim, keepdim=True)
        v = b - b.mean(dim=dim, keepdim=True)
        return (u * v).sum(dim) / (torch.sqrt((u * u).sum(dim)) * torch.sqrt((v * v).sum(dim)) + 1e-8)
    inter = 1 - rho(ys, yt, 1).mean()
    intra = 1 - rho(ys, yt, 0).mean()
    return beta * inter + gamma * intra


def ref_wsl(zs, zt, label, T):  # 2.7
    c = zs.shape[1]
    tgt = zt.detach().argmax(dim=1) if label is None else label
    Y = one_hot(tgt, c)
    ce_s = -(Y * F.log_softmax(zs.detach(), dim=1)).sum(1)
    ce_t = -(Y * F.log_softmax(zt.detach(), dim=1)).sum(1)
    ratio = torch.clamp(ce_s / (ce_t + 1e-7), min=0)
    w = 1 - torch.exp(-ratio)
    kd = -(F.softmax(zt / T, dim=1) * F.log_softmax(zs / T, dim=1)).sum(1)
    return T * T * (kd * w).mean()


def ref_skd(zs, zt, label, T, m, alpha):  # 2.8
    c = zs.shape[1]
    tgt = zt.detach().argmax(dim=1) if label is None else label
    Y = one_hot(tgt, c)

    def ln(z):
        mean = z.mean(dim=1, keepdim=True)
        var = z.var(dim=1, unbiased=False, keepdim=True)
        return m * (z - mean) / torch.sqrt(var + 1e-7)
    s2, t2 = ln(zs), ln(zt)
    kd = T * T * (-(F.softmax(t2 / T, dim=1) * F.log_softmax(s2 / T, dim=1)).sum(1)).mean()
    ce = (-(Y * F.log_softmax(s2, dim=1)).sum(1)).mean()
    return alpha * kd + (1 - alpha) * ce


def huber_mean(a, b):
    d = a - b
    ad = d.abs()
    return torch.where(ad < 1, 0.5 * d * d, ad - 0.5).mean()


def ref_rkd_angle(fs, ft):  # 2.12, anchor loops written out
    def angles(x):
        x = x.reshape(x.shape[0], -1)
        n = x.shape[0]
        out = []
        for i in range(n):
            e = []
            for j in range(n):
                v = x[j] - x[i]
                e.append(v / torch.clamp(torch.linalg.norm(v), min=1e-12))
            e = torch.stack(e)
            out.append(e @ e.T)
        return torch.stack(out).reshape(-1)
    return huber_mean(angles(fs), angles(ft))


def ref_rkd_distance(fs, ft):  # 2.12
    def dist(x):
        x = x.reshape(x.shape[0], -1)
        n = x.shape[0]
        rows = []
        for i in range(n):
            rows.append(torch.stack([torch.sqrt(torch.clamp(
                (x[i] * x[i]).sum() + (x[j] * x[j]).sum() - 2 * (x[i] * x[j]).sum(), min=1e-12))
                for j in range(n)]))
        d = torch.stack(rows)
        return d / (d.mean() + 1e-12)
    return huber_mean(dist(fs), dist(ft))


def ref_mgd(fs, ft, params, u, alpha, lam):  # 2.10
    if "align.weight" in params:
        fs = F.conv2d(fs, params["align.weight"], params["align.bias"])
    mask = torch.where(u < lam, 0.0, 1.0).to(torch.float64)
    h = F.conv2d(fs * mask, params["generation.0.weight"], params["generation.0.bias"], padding=1)
    h = F.conv2d(F.relu(h), params["generation.2.weight"], params["generation.2.bias"], padding=1)
    return alpha * ((h - ft) ** 2).mean()


def ref_pefd(fs, ft, params, q, mode):  # 2.11
    if mode == "gap":
        fs, ft = fs.mean(dim=(2, 3)), ft.mean(dim=(2, 3))
    fs, ft = fs.reshape(fs.shape[0], -1), ft.reshape(ft.shape[0], -1)
    proj = sum(F.relu(fs @ params[f"projectors.{i}.weight"].T + params[f"projectors.{i}.bias"])
               for i in range(q)) / q
    proj = proj / torch.sqrt((proj * proj).sum(1, keepdim=True))
    ft = ft / torch.sqrt((ft * ft).sum(1, keepdim=True))
    return (1 - (proj * ft).sum(1)).mean()


def ref_afd(bk, svals, query, tvals, p_t, p_s, groups, qk):  # 2.14, loops over i and j
    n, s, t, _ = bk.shape
    total = 0
    for i in range(t):
        logits = torch.stack([(bk[:, j, i, :] * query[:, i, :]).sum(-1) + (p_t[i] * p_s[j]).sum()
                              for j in range(s)], dim=1) / math.sqrt(qk)
        att = F.softmax(logits, dim=1)
        vs = svals[groups[i]]
        D = torch.stack([((vs[:, j, :] - tvals[i]) ** 2).mean(-1) for j in range(s)], dim=1)
        total = total + (att * D).sum(1).mean()
    return total


# ---------------------------------------------------------------- cases

cases = []


def add(case_id, loss, options, inputs, value, target=None, params=None, seed=None, unchecked=()):
    # unchecked: parameters whose gradient is zero by construction (a bias before a batch norm);
    # both sides hold only rounding noise there, so no relative comparison can be made.
    leaves = dict(inputs)
    leaves.update({f"param:{k}": v for k, v in (params or {}).items() if k not in unchecked})
    grads = torch.autograd.grad(value, list(leaves.values()), allow_unused=True)
    case = {"id": case_id, "loss": loss, "options": options,
            "inputs": {k: enc(v) for k, v in inputs.items()},
            "value": value.item(),
            "grads": {k: enc(g if g is not None else torch.zeros_like(v))
                      for (k, v), g in zip(leaves.items(), grads)}}
    if target is not None:
        case["target"] = enc(target)
    if params:
        case["params"] = {k: enc(v) for k, v in params.items()}
    if seed is not None:
        case["seed"] = seed
    cases.append(case)


N, C = 6, 7

for T in (4.0, 1.0, 0.5):
    s, t = randn(N, C), randn(N, C)
    add(f"kd/T={T}", "kd", {"temperature": T}, {"student": s, "teacher": t}, ref_kd(s, t, T))

for eps in (0.0, 0.1):
    x, y = randn(N, C), labels(N, C)
    add(f"ce/hard/eps={eps}", "ce", {"label_smoothing": eps}, {"logits": x}, ref_ce(x, y, eps), target=y)
    x, y = randn(N, C), labels(N, C).reshape(N, 1)
    add(f"ce/hard[N,1]/eps={eps}", "ce", {"label_smoothing": eps}, {"logits": x}, ref_ce(x, y, eps), target=y)
    x, z = randn(N, C), randn(N, C)
    add(f"ce/soft/eps={eps}", "ce", {"label_smoothing": eps}, {"logits": x, "teacher": z}, ref_ce(x, z, eps))

for act, sum_across in (("softmax", False), ("softmax", True), ("sigmoid", False), ("none", False)):
    if act == "none":
        s = F.softmax(randn(N, C), dim=1).detach().requires_grad_()
        t = F.softmax(randn(N, C), dim=1).detach().requires_grad_()
    else:
        s, t = randn(N, C), randn(N, C)
    add(f"dml/{act}/sum={sum_across}", "dml", {"act": act, "eps": 1e-12, "sum_across_class_dim": sum_across},
        {"student": s, "teacher": t}, ref_dml(s, t, act, 1e-12, sum_across))
s, t = randn(2, 3, C), randn(2, 3, C)
add("dml/softmax/rank3", "dml", {"act": "softmax", "eps": 1e-12, "sum_across_class_dim": False},
    {"student": s, "teacher": t}, ref_dml(s, t, "softmax", 1e-12, False))

for mode in ("l1", "l2", "smooth_l1"):
    s, t = randn(2, 3, 4, 4), randn(2, 3, 4, 4)
    add(f"distance/{mode}", "distance", {"mode": mode}, {"student": s, "teacher": t}, ref_distance(s, t, mode))

for T, a, b, with_label in ((1.0, 1.0, 1.0, True), (4.0, 1.0, 8.0, True), (2.0, 0.5, 2.0, False)):
    s, t, y = randn(N, C), randn(N, C), labels(N, C)
    opts = {"temperature": T, "alpha": a, "beta": b, "use_target_as_gt": False}
    add(f"dkd/T={T}/a={a}/b={b}/label={with_label}", "dkd", opts, {"student": s, "teacher": t},
        ref_dkd(s, t, y if with_label else None, T, a, b), target=y if with_label else None)
s, t, y = randn(N, C), randn(N, C), labels(N, C)
add("dkd/use_target_as_gt", "dkd", {"temperature": 1.0, "alpha": 1.0, "beta": 1.0, "use_target_as_gt": True},
    {"student": s, "teacher": t}, ref_dkd(s, t, None, 1.0, 1.0, 1.0), target=y)

for beta, gamma in ((1.0, 1.0), (2.0, 0.5)):
    s, t = randn(N, C), randn(N, C)
    add(f"dist/beta={beta}/gamma={gamma}", "dist", {"beta": beta, "gamma": gamma},
        {"student": s, "teacher": t}, ref_dist(s, t, beta, gamma))

for T, with_label in ((2.0, True), (1.0, False)):
    s, t, y = randn(N, C), randn(N, C), labels(N, C)
    add(f"wsl/T={T}/label={with_label}", "wsl", {"temperature": T}, {"student": s, "teacher": t},
        ref_wsl(s, t, y if with_label else None, T), target=y if with_label else None)

for T, m, a, with_label in ((1.0, 2.0, 0.9, True), (2.0, 1.0, 0.5, True), (1.0, 2.0, 0.9, False)):
    s, t, y = randn(N, C), randn(N, C), labels(N, C)
    add(f"skd/T={T}/m={m}/a={a}/label={with_label}", "skd", {"temperature": T, "multiplier": m, "alpha": a},
        {"student": s, "teacher": t}, ref_skd(s, t, y if with_label else None, T, m, a),
        target=y if with_label else None)

s, t = randn(5, 4), randn(5, 6)
add("rkd_angle/flat", "rkd_angle", {}, {"student": s, "teacher": t}, ref_rkd_angle(s, t))
s, t = randn(5, 2, 2, 2, scale=0.3), randn(5, 3, 1, 1, scale=0.3)
add("rkd_angle/maps", "rkd_angle", {}, {"student": s, "teacher": t}, ref_rkd_angle(s, t))
s, t = randn(5, 4), randn(5, 6)
add("rkd_distance/flat", "rkd_distance", {}, {"student": s, "teacher": t}, ref_rkd_distance(s, t))
s, t = randn(5, 2, 2, 2, scale=3.0), randn(5, 3, 1, 1, scale=0.1)
add("rkd_distance/maps", "rkd_distance", {}, {"student": s, "teacher": t}, ref_rkd_distance(s, t))


def conv_params(prefix, cin, cout, k):
    return {f"{prefix}.weight": randn(cout, cin, k, k, scale=0.3), f"{prefix}.bias": randn(cout, scale=0.1)}


for cs, ct, lam, seed in ((4, 6, 0.0, None), (5, 5, 0.15, 7), (3, 5, 0.5, 11)):
    params = {}
    if cs != ct:
        params.update(conv_params("align", cs, ct, 1))
    params.update(conv_params("generation.0", ct, ct, 3))
    params.update(conv_params("generation.2", ct, ct, 3))
    fs, ft = randn(2, cs, 3, 4), randn(2, ct, 3, 4)
    if seed is None:
        u = torch.ones(2, ct, 1, 1)
    else:
        torch.manual_seed(seed)
        u = torch.rand(2, ct, 1, 1, dtype=torch.float32)
    add(f"mgd/{cs}->{ct}/lambda={lam}", "mgd",
        {"student_channels": cs, "teacher_channels": ct, "alpha_mgd": 1.756, "lambda_mgd": lam},
        {"student": fs, "teacher": ft}, ref_mgd(fs, ft, params, u, 1.756, lam), params=params, seed=seed)

for mode, q, s_shape, t_shape, cs, ct in (("flatten", 3, (N, 8, 1, 1), (N, 6, 1, 1), 8, 6),
                                          ("flatten", 2, (N, 2, 2, 2), (N, 5), 8, 5),
                                          ("gap", 3, (N, 8, 3, 3), (N, 6, 2, 2), 8, 6)):
    params = {}
    for i in range(q):
        params[f"projectors.{i}.weight"] = randn(ct, cs, scale=0.5)
        params[f"projectors.{i}.bias"] = randn(ct, scale=0.1)
    fs, ft = randn(*s_shape), randn(*t_shape)
    add(f"pefd/{mode}/q={q}", "pefd",
        {"student_channels": cs, "teacher_channels": ct, "num_projectors": q, "mode": mode},
        {"student": fs, "teacher": ft}, ref_pefd(fs, ft, params, q, mode), params=params)

s_shapes = [[4, 4, 4], [6, 2, 2], [8, 1, 1]]
t_shapes = [[4, 4, 4], [4, 4, 4], [6, 2, 2], [8, 1, 1], [6, 2, 2]]
groups, unique = [], []
for shape in t_shapes:
    if shape not in unique:
        unique.append(shape)
    groups.append(unique.index(shape))
qk, n = 5, 3
bk, query = randn(n, len(s_shapes), len(t_shapes), qk, scale=0.7), randn(n, len(t_shapes), qk, scale=0.7)
svals = [randn(n, len(s_shapes), h * w, scale=0.5) for _, h, w in unique]
tvals = [randn(n, h * w, scale=0.5) for _, h, w in t_shapes]
params = {"p_t": randn(len(t_shapes), qk, scale=0.5), "p_s": randn(len(s_shapes), qk, scale=0.5)}
inputs = {"bilinear_key": bk, "query": query}
inputs.update({f"student_values.{u}": v for u, v in enumerate(svals)})
inputs.update({f"teacher_values.{i}": v for i, v in enumerate(tvals)})
add("afd/5t-3s", "afd", {"student_shapes": s_shapes, "teacher_shapes": t_shapes, "qk_dim": qk}, inputs,
    ref_afd(bk, svals, query, tvals, params["p_t"], params["p_s"], groups, qk), params=params)

# Options that match the methods' original code (appended last, so the cases above keep their
# random inputs). DIST's official code: tau^2 * DIST on softmax(z / tau).
for tau in (4.0, 0.5):
    s, t = randn(N, C, scale=3.0), randn(N, C, scale=3.0)
    add(f"dist/tau={tau}", "dist", {"beta": 1.0, "gamma": 2.0, "tau": tau}, {"student": s, "teacher": t},
        tau * tau * ref_dist(s / tau, t / tau, 1.0, 2.0))


def ref_rkd_distance_original(fs, ft):  # the RKD paper's code: zero diagonal, mean of positive entries
    def dist(x):
        x = x.reshape(x.shape[0], -1)
        sq = (x * x).sum(1)
        d = torch.sqrt(torch.clamp(sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * x @ x.t(), min=1e-12))
        d = d * (1 - torch.eye(x.shape[0], dtype=x.dtype))
        return d / d[d > 0].mean()
    return F.smooth_l1_loss(dist(fs), dist(ft))


s, t = randn(6, 4), randn(6, 5)
add("rkd_distance/exclude_diagonal", "rkd_distance", {"exclude_diagonal": True}, {"student": s, "teacher": t},
    ref_rkd_distance_original(s, t))

# ---------------------------------------------------------------- methods of docs/methods.md
# Each written from its official code (repository, commit and path in docs/methods.md).

def normalize(z):  # logit standardisation: sunshangquan/logit-standardization-KD, KD.py
    return (z - z.mean(dim=-1, keepdim=True)) / (1e-7 + z.std(dim=-1, keepdim=True))


for T in (2.0, 1.0):
    s, t = randn(N, C), randn(N, C)
    add(f"kd/standardize/T={T}", "kd", {"temperature": T, "standardize": True}, {"student": s, "teacher": t},
        ref_kd(normalize(s), normalize(t), T))
s, t, y = randn(N, C), randn(N, C), labels(N, C)
add("dkd/standardize", "dkd", {"temperature": 2.0, "alpha": 1.0, "beta": 8.0, "use_target_as_gt": False, "standardize": True},
    {"student": s, "teacher": t}, ref_dkd(normalize(s), normalize(t), y, 2.0, 1.0, 8.0), target=y)
s, t = randn(N, C), randn(N, C)
add("dist/standardize", "dist", {"beta": 1.0, "gamma": 2.0, "tau": 2.0, "standardize": True}, {"student": s, "teacher": t},
    4.0 * ref_dist(normalize(s) / 2.0, normalize(t) / 2.0, 1.0, 2.0))
s, t, y = randn(N, C), randn(N, C), labels(N, C)
add("wsl/standardize", "wsl", {"temperature": 2.0, "standardize": True}, {"student": s, "teacher": t},
    ref_wsl(normalize(s), normalize(t), y, 2.0), target=y)


def ref_nkd(zs, zt, label, T, gamma):  # yzd-v/cls_KD, mmcls/models/dis_losses/nkd.py
    zt = zt.detach()
    label = (zt.argmax(dim=1) if label is None else label).view(-1, 1)
    n = zs.shape[0]
    s_t = torch.gather(F.log_softmax(zs, dim=1), 1, label)
    t_t = torch.gather(F.softmax(zt, dim=1), 1, label)
    loss_t = -(t_t * s_t).mean()
    mask = torch.ones_like(zs).scatter_(1, label, 0).bool()
    S = F.log_softmax(zs[mask].reshape(n, -1) / T, dim=1)
    Tn = F.softmax(zt[mask].reshape(n, -1) / T, dim=1)
    return loss_t - gamma * T ** 2 * (Tn * S).sum(dim=1).mean()


for T, gamma, with_label in ((1.0, 1.5, True), (2.0, 1.0, True), (1.0, 1.5, False)):
    s, t, y = randn(N, C), randn(N, C), labels(N, C)
    add(f"nkd/T={T}/gamma={gamma}/label={with_label}", "nkd", {"temperature": T, "gamma": gamma},
        {"student": s, "teacher": t}, ref_nkd(s, t, y if with_label else None, T, gamma),
        target=y if with_label else None)


class Reverse(torch.autograd.Function):  # CTKD's gradient reversal: backward multiplies by lambda
    @staticmethod
    def forward(ctx, x, lam):
        ctx.lam = lam
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return ctx.lam * g, None


def ctkd_lambda(epoch, lmax, lmin, loops):  # zhengli97/CTKD, train_student.py CosineDecay
    i = min(max(epoch, 0), loops)
    return (math.cos(i * math.pi / loops) + 1.0) * 0.5 * (lmax - lmin) + lmin


def ref_ctkd(zs, zt, theta, lam, t_start, t_end, stand):  # CTKD: Global_T + DistillKL (batchmean KL * T^2)
    if stand:
        zs, zt = normalize(zs), normalize(zt.detach())
    T = t_start + t_end * torch.sigmoid(Reverse.apply(theta, lam))
    kl = F.kl_div(F.log_softmax(zs / T, dim=1), F.softmax(zt.detach() / T, dim=1), reduction="batchmean")
    return (kl * T * T).reshape(())


for epoch, theta0, stand in ((1, 1.0, False), (3, -0.5, False), (9, 0.3, True)):
    s, t = randn(N, C), randn(N, C)
    theta = torch.tensor([theta0], requires_grad=True)
    lam = ctkd_lambda(epoch, 0.0, -1.0, 5)
    add(f"ctkd/epoch={epoch}/standardize={stand}", "ctkd",
        {"t_start": 1.0, "t_end": 20.0, "lambda_max": 0.0, "lambda_min": -1.0, "lambda_epochs": 5, "epoch": epoch,
         "standardize": stand},
        {"student": s, "teacher": t}, ref_ctkd(s, t, theta, lam, 1.0, 20.0, stand), params={"global_t": theta})


def ref_ensemble_kd(zs, teachers, weights, T):  # soft targets averaged, then KD against them
    w = [x / sum(weights) for x in weights]
    p = sum(wi * F.softmax(zt.detach() / T, dim=1) for wi, zt in zip(w, teachers))
    return T * T / zs.shape[0] * (p * (torch.log(p) - F.log_softmax(zs / T, dim=1))).sum()


for weights, T in (([1.0, 1.0], 4.0), ([3.0, 1.0, 0.5], 2.0)):
    s = randn(N, C)
    teachers = [randn(N, C, scale=3.0) for _ in weights]
    inputs = {"student": s}
    inputs.update({f"teachers.{i}": z for i, z in enumerate(teachers)})
    add(f"ensemble_kd/{len(weights)}-teachers/T={T}", "ensemble_kd", {"teacher_weights": weights, "temperature": T},
        inputs, ref_ensemble_kd(s, teachers, weights, T))


def ref_fitnet(fs, ft, params, kind, relu):  # megvii-research/mdistiller, distillers/_common.py ConvReg + MSE
    if kind == "down":
        x = F.conv2d(fs, params["conv.weight"], params["conv.bias"], stride=2, padding=1)
    elif kind == "up":
        x = F.conv_transpose2d(fs, params["conv.weight"], params["conv.bias"], stride=2, padding=1)
    else:
        x = F.conv2d(fs, params["conv.weight"], params["conv.bias"])
    x = F.batch_norm(x, None, None, params["bn.weight"], params["bn.bias"], training=True, eps=1e-5)
    if relu:
        x = F.relu(x)
    return F.mse_loss(x, ft)


for kind, s_shape, t_shape, relu in (("down", (4, 6, 6), (5, 3, 3), True), ("up", (3, 2, 2), (4, 4, 4), True),
                                     ("same", (3, 4, 5), (6, 3, 3), False)):
    cs, ct = s_shape[0], t_shape[0]
    if kind == "down":
        w = randn(ct, cs, 3, 3, scale=0.3)
    elif kind == "up":
        w = randn(cs, ct, 4, 4, scale=0.3)
    else:
        w = randn(ct, cs, 1 + s_shape[1] - t_shape[1], 1 + s_shape[2] - t_shape[2], scale=0.3)
    params = {"conv.weight": w, "conv.bias": randn(ct, scale=0.1), "bn.weight": (1 + 0.2 * torch.randn(ct, generator=gen)).requires_grad_(),
              "bn.bias": randn(ct, scale=0.1)}
    fs, ft = randn(3, *s_shape), randn(3, *t_shape)
    add(f"fitnet/{kind}/relu={relu}", "fitnet", {"student_shape": list(s_shape), "teacher_shape": list(t_shape), "relu": relu},
        {"student": fs, "teacher": ft}, ref_fitnet(fs, ft, params, kind, relu), params=params,
        unchecked=("conv.bias",))


def ref_at(fs, ft, p):  # megvii-research/mdistiller, distillers/AT.py single_stage_at_loss
    def at(f):
        return F.normalize(f.pow(p).mean(1).reshape(f.size(0), -1))
    sh, th = fs.shape[2], ft.shape[2]
    if sh > th:
        fs = F.adaptive_avg_pool2d(fs, (th, th))
    elif sh < th:
        ft = F.adaptive_avg_pool2d(ft, (sh, sh))
    return (at(fs) - at(ft)).pow(2).mean()


for p_at, s_shape, t_shape in ((2.0, (3, 4, 4), (5, 4, 4)), (2.0, (3, 6, 6), (5, 3, 3)), (2.0, (3, 2, 2), (4, 4, 4)),
                               (3.0, (2, 3, 3), (3, 3, 3))):
    fs, ft = randn(4, *s_shape), randn(4, *t_shape)
    add(f"at/p={p_at}/{s_shape[1]}->{t_shape[1]}", "at", {"p": p_at}, {"student": fs, "teacher": ft}, ref_at(fs, ft, p_at))


def normal_cdf(x):
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def ref_ofd_margin(gamma, beta):  # clovaai/overhaul-distillation, ImageNet/distiller.py get_margin_from_BN
    out = []
    for s, m in zip(gamma.tolist(), beta.tolist()):
        s = abs(s)
        if normal_cdf(-m / s) > 0.001:
            out.append(-s * math.exp(-(m / s) ** 2 / 2) / math.sqrt(2 * math.pi) / normal_cdf(-m / s) + m)
        else:
            out.append(-3 * s)
    return torch.tensor(out)


def ref_ofd(students, teachers, margins, params):  # distiller.py: connector, distillation_loss, 2^-(F-1-i); / batch
    total, n = 0, len(students)
    for i, (fs, ft, margin) in enumerate(zip(students, teachers, margins)):
        x = F.conv2d(fs, params[f"connectors.{i}.0.weight"])
        x = F.batch_norm(x, None, None, params[f"connectors.{i}.1.weight"], params[f"connectors.{i}.1.bias"], training=True)
        target = torch.max(ft.detach(), margin.view(1, -1, 1, 1))
        loss = F.mse_loss(x, target, reduction="none")
        loss = torch.masked_select(loss, (x > target) | (target > 0))
        total = total + loss.sum() / 2 ** (n - i - 1)
    return total / students[0].shape[0]


ofd_margin_cases = []
gamma = torch.cat([torch.rand(6, generator=gen) * 2 + 0.1, torch.tensor([0.5, 0.2])])
beta = torch.cat([torch.randn(6, generator=gen) * 2, torch.tensor([2.0, 1.0])])  # the last two: Phi(-beta/gamma) <= 0.001
gamma[1] = -gamma[1]  # the official code takes |gamma|
ofd_margin_cases.append({"weight": enc(gamma), "bias": enc(beta), "margin": enc(ref_ofd_margin(gamma, beta))})

for channels in (((3, 4),), ((2, 3), (4, 5))):
    students, teachers, margins, params, inputs = [], [], [], {}, {}
    for i, (cs, ct) in enumerate(channels):
        size = 4 // (i + 1)
        students.append(randn(3, cs, size, size))
        teachers.append(randn(3, ct, size, size))
        g, b = torch.rand(ct, generator=gen) + 0.2, torch.randn(ct, generator=gen)
        margins.append(ref_ofd_margin(g, b).to(torch.float64))
        params[f"connectors.{i}.0.weight"] = randn(ct, cs, 1, 1, scale=0.5)
        params[f"connectors.{i}.1.weight"] = (1 + 0.2 * torch.randn(ct, generator=gen)).requires_grad_()
        params[f"connectors.{i}.1.bias"] = randn(ct, scale=0.3)
        inputs.update({f"students.{i}": students[-1], f"teachers.{i}": teachers[-1]})
    case_inputs = dict(inputs)
    case = {"student_channels": [c[0] for c in channels], "teacher_channels": [c[1] for c in channels],
            "margins": [m.tolist() for m in margins]}
    add(f"ofd/{len(channels)}-maps", "ofd", case, case_inputs, ref_ofd(students, teachers, margins, params), params=params)


def ref_hcl(fstudent, fteacher):  # megvii-research/mdistiller, distillers/ReviewKD.py hcl_loss
    loss_all = 0.0
    for fs, ft in zip(fstudent, fteacher):
        n, c, h, w = fs.shape
        loss = F.mse_loss(fs, ft, reduction="mean")
        cnt, tot = 1.0, 1.0
        for l in [4, 2, 1]:
            if l >= h:
                continue
            cnt /= 2.0
            loss += F.mse_loss(F.adaptive_avg_pool2d(fs, (l, l)), F.adaptive_avg_pool2d(ft, (l, l)), reduction="mean") * cnt
            tot += cnt
        loss_all = loss_all + loss / tot
    return loss_all


def ref_reviewkd(students, teachers, p):  # ReviewKD.py: ABF modules deepest first, then hcl_loss
    def seq_bn(x, prefix, kernel):
        x = F.conv2d(x, p[prefix + ".0.weight"], padding=kernel // 2)
        return F.batch_norm(x, None, None, p[prefix + ".1.weight"], p[prefix + ".1.bias"], training=True)
    n_levels = len(students)
    results, res = [None] * n_levels, None
    for k in reversed(range(n_levels)):
        x = seq_bn(students[k], f"abfs.{k}.conv1", 1)
        if res is not None:
            n, _, h, w = x.shape
            y = F.interpolate(res, (h, h), mode="nearest")
            z = torch.sigmoid(F.conv2d(torch.cat([x, y], dim=1), p[f"abfs.{k}.att_conv.0.weight"], p[f"abfs.{k}.att_conv.0.bias"]))
            x = x * z[:, 0].view(n, 1, h, w) + y * z[:, 1].view(n, 1, h, w)
        out_shape = teachers[k].shape[-1]
        if x.shape[-1] != out_shape:
            x = F.interpolate(x, (out_shape, out_shape), mode="nearest")
        results[k] = seq_bn(x, f"abfs.{k}.conv2", 3)
        res = x
    return ref_hcl(results, [t.detach() for t in teachers])


# Levels shallow to deep: student sizes 4, 2, 1 (pooled), teacher sizes 8 (resized up), 2, 1.
s_levels, t_levels = [(3, 4), (4, 2), (5, 1)], [(2, 8), (3, 2), (4, 1)]
mid = min(512, s_levels[-1][0])
params, inputs, students, teachers = {}, {}, [], []
for i, ((cs, hs), (ct, ht)) in enumerate(zip(s_levels, t_levels)):
    # 5 samples: a batch norm over the 1 x 1 level normalises 5 values (2 would make its
    # float32 gradients mostly rounding).
    students.append(randn(5, cs, hs, hs))
    teachers.append(randn(5, ct, ht, ht))
    inputs.update({f"students.{i}": students[-1], f"teachers.{i}": teachers[-1]})
    params[f"abfs.{i}.conv1.0.weight"] = randn(mid, cs, 1, 1, scale=0.5)
    params[f"abfs.{i}.conv1.1.weight"] = (1 + 0.2 * torch.randn(mid, generator=gen)).requires_grad_()
    params[f"abfs.{i}.conv1.1.bias"] = randn(mid, scale=0.2)
    params[f"abfs.{i}.conv2.0.weight"] = randn(ct, mid, 3, 3, scale=0.3)
    params[f"abfs.{i}.conv2.1.weight"] = (1 + 0.2 * torch.randn(ct, generator=gen)).requires_grad_()
    params[f"abfs.{i}.conv2.1.bias"] = randn(ct, scale=0.2)
    if i + 1 < len(s_levels):
        params[f"abfs.{i}.att_conv.0.weight"] = randn(2, 2 * mid, 1, 1, scale=0.5)
        params[f"abfs.{i}.att_conv.0.bias"] = randn(2, scale=0.2)
add("reviewkd/3-levels", "reviewkd", {"student_channels": [c for c, _ in s_levels], "teacher_channels": [c for c, _ in t_levels]},
    inputs, ref_reviewkd(students, teachers, params), params=params)


class RefCRD:  # HobbitLong/RepDistiller, crd/criterion.py (CRDLoss, ContrastLoss, Embed) and crd/memory.py
    def __init__(self, params, memory_v1, memory_v2, z, n_data, T, momentum):
        self.p, self.m1, self.m2, self.z = params, memory_v1.clone(), memory_v2.clone(), list(z)
        self.n, self.T, self.momentum = n_data, T, momentum

    def embed(self, x, prefix):
        x = x.view(x.shape[0], -1) @ self.p[prefix + ".weight"].t() + self.p[prefix + ".bias"]
        return x / x.pow(2).sum(1, keepdim=True).pow(0.5)

    def contrast_loss(self, x):
        bsz, m = x.shape[0], x.size(1) - 1
        pn = 1 / float(self.n)
        p_pos = x.select(1, 0)
        log_d1 = torch.div(p_pos, p_pos.add(m * pn + 1e-7)).log()
        p_neg = x.narrow(1, 1, m)
        log_d0 = torch.div(p_neg.clone().fill_(m * pn), p_neg.add(m * pn + 1e-7)).log()
        return -(log_d1.sum(0) + log_d0.view(-1, 1).sum(0)) / bsz

    def __call__(self, f_s, f_t, y, idx):
        v1, v2 = self.embed(f_s, "embed_s"), self.embed(f_t, "embed_t")
        b, k1, d = v1.size(0), idx.size(1), v1.size(1)
        w1 = torch.index_select(self.m1, 0, idx.view(-1)).detach().view(b, k1, d)
        out_v2 = torch.exp(torch.div(torch.bmm(w1, v2.view(b, d, 1)), self.T))
        w2 = torch.index_select(self.m2, 0, idx.view(-1)).detach().view(b, k1, d)
        out_v1 = torch.exp(torch.div(torch.bmm(w2, v1.view(b, d, 1)), self.T))
        if self.z[0] < 0:
            self.z[0] = out_v1.mean().item() * self.n
        if self.z[1] < 0:
            self.z[1] = out_v2.mean().item() * self.n
        out_v1, out_v2 = torch.div(out_v1, self.z[0]), torch.div(out_v2, self.z[1])
        with torch.no_grad():
            for mem, v in ((self.m1, v1), (self.m2, v2)):
                pos = torch.index_select(mem, 0, y.view(-1)).mul(self.momentum).add(torch.mul(v, 1 - self.momentum))
                mem.index_copy_(0, y, pos.div(pos.pow(2).sum(1, keepdim=True).pow(0.5)))
        return (self.contrast_loss(out_v1.squeeze(2)) + self.contrast_loss(out_v2.squeeze(2))).reshape(())


n_data, feat, k, bsz = 20, 6, 4, 5
crd_params = {"embed_s.weight": randn(feat, 8, scale=0.4), "embed_s.bias": randn(feat, scale=0.1),
              "embed_t.weight": randn(feat, 3 * 2 * 2, scale=0.4), "embed_t.bias": randn(feat, scale=0.1)}
stdv = 1.0 / math.sqrt(feat / 3)
mem1 = torch.rand(n_data, feat, generator=gen) * 2 * stdv - stdv
mem2 = torch.rand(n_data, feat, generator=gen) * 2 * stdv - stdv
y = torch.randperm(n_data, generator=gen)[:bsz]
contrast = torch.randint(0, n_data, (bsz, k + 1), generator=gen)
contrast[:, 0] = y
for z0, name in (((37.0, 52.0), "z-set"), ((-1.0, -1.0), "z-first-call")):
    fs, ft = randn(bsz, 8), randn(bsz, 3, 2, 2)
    ref = RefCRD(crd_params, mem1, mem2, z0, n_data, 0.07, 0.5)
    value = ref(fs, ft, y, contrast)
    add(f"crd/{name}", "crd", {"student_dim": 8, "teacher_dim": 12, "n_data": n_data, "feat_dim": feat, "nce_k": k,
                               "nce_t": 0.07, "nce_m": 0.5}, {"student": fs, "teacher": ft}, value, params=crd_params)
    # memory_s is the official memory_v1 (student embeddings), memory_t is memory_v2.
    cases[-1].update({"indices": enc(y), "contrast": enc(contrast),
                      "buffers": {"memory_s": enc(mem1), "memory_t": enc(mem2), "z": enc(torch.tensor(z0))},
                      "buffers_after": {"memory_s": enc(ref.m1), "memory_t": enc(ref.m2), "z": enc(torch.tensor(ref.z))}})

# Top-k teachers (a teacher cache): the teacher keeps its k largest logits; every other class
# gets the logit r = logsumexp(those left out) - log(C - k), which spreads the mass left out
# evenly over them (FKD's marginal smoothing). Expected: each loss on those dense smoothed
# logits, written out here; the C++ side gets (values, indices, rest) and builds the sparse form.
topk_cases = []
gen.manual_seed(20261130)


def smoothed(zt, k):
    values, indices = zt.detach().topk(k, dim=1)
    c = zt.shape[1]
    if k == c:
        return values, indices, None, zt.detach()
    left = zt.detach().scatter(1, indices, float("-inf"))
    rest = left.logsumexp(1) - math.log(c - k)
    dense = rest.unsqueeze(1).expand(-1, c).scatter(1, indices, values)
    return values, indices, rest, dense


def add_topk(case_id, loss, options, k, formula, with_label=True):
    s, t, y = randn(N, C), randn(N, C, scale=3.0), labels(N, C)
    values, indices, rest, dense = smoothed(t, k)
    value = formula(s, dense, y if with_label else None)
    (grad,) = torch.autograd.grad(value, [s])
    case = {"id": f"topk/k={k}/{case_id}", "loss": loss, "options": options, "k": k,
            "student": enc(s), "values": enc(values), "indices": enc(indices),
            "value": value.item(), "grad": enc(grad)}
    if rest is not None:
        case["rest"] = enc(rest)
    if with_label:
        case["target"] = enc(y)
    topk_cases.append(case)


for k in (1, 3, C):
    for T in (4.0, 1.0):
        add_topk(f"kd/T={T}", "kd", {"temperature": T}, k, lambda s, t, y, T=T: ref_kd(s, t, T), with_label=False)
    add_topk("dkd/T=4/b=8", "dkd", {"temperature": 4.0, "alpha": 1.0, "beta": 8.0}, k,
             lambda s, t, y: ref_dkd(s, t, y, 4.0, 1.0, 8.0))
    add_topk("dist/tau=1", "dist", {"beta": 1.0, "gamma": 2.0, "tau": 1.0}, k,
             lambda s, t, y: ref_dist(s, t, 1.0, 2.0), with_label=False)
    add_topk("wsl/T=2", "wsl", {"temperature": 2.0}, k, lambda s, t, y: ref_wsl(s, t, y, 2.0))
    add_topk("skd/T=1", "skd", {"temperature": 1.0, "multiplier": 2.0, "alpha": 0.9}, k,
             lambda s, t, y: ref_skd(s, t, y, 1.0, 2.0, 0.9))
    add_topk("ce/soft", "ce", {"label_smoothing": 0.0}, k, lambda s, t, y: ref_ce(s, t, 0.0), with_label=False)
    add_topk("dml/softmax", "dml", {"act": "softmax", "eps": 1e-12, "sum_across_class_dim": False}, k,
             lambda s, t, y: ref_dml(s, t, "softmax", 1e-12, False), with_label=False)

with open(sys.argv[1], "w") as out:
    json.dump({"generator": "tests/reference/make_loss_fixtures.py", "torch": torch.__version__,
               "cases": cases, "topk_cases": topk_cases, "ofd_margin_cases": ofd_margin_cases}, out, indent=None, separators=(",", ":"))
    out.write("\n")
print(f"wrote {len(cases)} cases to {sys.argv[1]}")
