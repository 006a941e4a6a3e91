"""Where depth lives: a dense linear probe from each visual token's hidden state to its depth.

Beside PCK (``probes/metrics.py``), per LLM layer and for the LLM's input ("layer -1", the
vision tower's output after the projector; ``gasp/capture/hidden.py``). ``probes/runner.py`` feeds it
from the same forward pass as the Q/K probe.

Shapes: F token grids (frames), h x w tokens, P = h * w, D feature width, K folds,
n tokens with a depth target, I images (frames) of held-out sequences.

* **Target.** A token's depth is the median of the valid depth (finite, > 0) of the pixels
  whose centres lie in its box (``VisualLayout``'s convention: token (r, c) covers
  x in [c*tw - 0.5, (c+1)*tw - 0.5)); a token without one has no target.
* **Fit (closed-form ridge).** Features are standardised with the training tokens' mean
  and standard deviation (a constant feature keeps std 1); the intercept is not penalised;
  the weights solve (C + lambda * n * I) beta = c with C, c the standardised, centred Gram
  matrix and cross term. lambda is chosen from ``LAMBDAS`` by K-fold cross-validation over
  the probe-train sequences, folds by scene, on the MSE of depth; then refitted on all of
  them. Only sufficient statistics (per fold: n, sum x, sum y, X^T X, X^T y, sum y^2, in
  float64) are kept, so the fit sees every training token and memory does not grow with
  them: O(K D^2) per layer.
* **Metrics (probe3d's).** On each held-out image: AbsRel = mean |p - g| / g, RMSE of log
  depth = sqrt(mean (log p - log g)^2), delta < 1.25 = fraction with max(p/g, g/p) < 1.25,
  then averaged over images. "metric" scores the prediction as is; "scale_shift" first fits
  s, t minimising sum (s p + t - g)^2 on the image (least squares; for a constant p that is
  the image's mean depth). Predictions are clamped to at least ``EPS_REL`` times the
  training mean depth before scoring, so the logarithm exists.
* **References (model-free).** "pixels": the same ridge probe on the token's pixels,
  area-resampled to ``PATCH`` x ``PATCH`` RGB in [0, 1]. "constant": the training mean
  depth everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from probes.config import ProbeError

LAMBDAS = tuple(float(10.0 ** e) for e in range(-6, 3))   # times n_train, on standardised features
EPS_REL = 1e-3
PATCH = 8
METRICS = ("abs_rel", "rmse_log", "delta_1.25")
ALIGNMENTS = ("metric", "scale_shift")


class DepthProbeError(ProbeError):
    """Bad depth-probe input (no depth, too few sequences), reported without a traceback."""


# ---- targets and pixel features ---------------------------------------------------------------
def _box_edges(count: int, size: float, limit: int) -> np.ndarray:
    """(count + 1,) first pixel index of each token box and one past the last: ceil(c*size - 0.5)."""
    return np.clip(np.ceil(np.arange(count + 1) * size - 0.5).astype(np.int64), 0, limit)


def token_depth(depth: np.ndarray, grid: tuple[int, int], token_size: tuple[float, float]) -> np.ndarray:
    """(F, h, w) float64 median valid depth per token box of (F, H, W) depth; NaN where none is valid."""
    F, H, W = depth.shape
    (h, w), (th, tw) = grid, token_size
    ys, xs = _box_edges(h, th, H), _box_edges(w, tw, W)
    d = np.where(np.isfinite(depth) & (depth > 0), depth, np.nan).astype(np.float64)
    out = np.full((F, h, w), np.nan)
    for r in range(h):
        for c in range(w):
            box = d[:, ys[r]:ys[r + 1], xs[c]:xs[c + 1]].reshape(F, -1)
            ok = np.isfinite(box).any(axis=1)
            if ok.any():
                out[ok, r, c] = np.nanmedian(box[ok], axis=1)
    return out


def pixel_features(frames: np.ndarray, grid: tuple[int, int], token_size: tuple[float, float],
                   patch: int = PATCH) -> torch.Tensor:
    """(F, P, 3 * patch^2) float32: each token's pixels (F, H, W, 3) uint8, area-resampled, in [0, 1]."""
    (h, w), (th, tw) = grid, token_size
    H, W = frames.shape[1:3]
    ys, xs = _box_edges(h, th, H), _box_edges(w, tw, W)
    x = torch.from_numpy(np.ascontiguousarray(frames[:, ys[0]:ys[-1], xs[0]:xs[-1]])).permute(0, 3, 1, 2).float() / 255
    x = torch.nn.functional.interpolate(x, size=(h * patch, w * patch), mode="area")    # (F, 3, h*p, w*p)
    x = x.unflatten(2, (h, patch)).unflatten(4, (w, patch))                             # (F, 3, h, p, w, p)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(x.shape[0], h * w, 3 * patch * patch)


# ---- ridge on sufficient statistics ----------------------------------------------------------
@dataclass
class RidgeStats:
    """Per-fold sums over training tokens, float64 on the CPU."""

    folds: int
    dim: int
    n: np.ndarray = field(init=False)
    sx: torch.Tensor = field(init=False)
    sy: np.ndarray = field(init=False)
    sxx: torch.Tensor = field(init=False)
    sxy: torch.Tensor = field(init=False)
    syy: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        K, D = self.folds, self.dim
        self.n, self.sy, self.syy = np.zeros(K), np.zeros(K), np.zeros(K)
        self.sx, self.sxy = torch.zeros(K, D, dtype=torch.float64), torch.zeros(K, D, dtype=torch.float64)
        self.sxx = torch.zeros(K, D, D, dtype=torch.float64)

    def add(self, x: torch.Tensor, y: torch.Tensor, fold: int) -> None:
        """Tokens x (n, D) (any device and float dtype) with targets y (n,) into fold ``fold``."""
        x, y = x.double(), y.to(x.device).double()
        self.n[fold] += x.shape[0]
        self.sx[fold] += x.sum(0).cpu()
        self.sy[fold] += float(y.sum())
        self.sxx[fold] += (x.T @ x).cpu()
        self.sxy[fold] += (x.T @ y).cpu()
        self.syy[fold] += float((y * y).sum())

    def total(self, leave_out: int | None = None) -> tuple:
        keep = [k for k in range(self.folds) if k != leave_out]
        return (self.n[keep].sum(), self.sx[keep].sum(0), self.sy[keep].sum(), self.sxx[keep].sum(0),
                self.sxy[keep].sum(0))


@dataclass
class Ridge:
    """y ~ x . w + b."""

    w: torch.Tensor          # (D,) float64
    b: float
    lam: float               # the chosen lambda (times n_train)
    cv_mse: list[float]      # per LAMBDAS
    mean_target: float       # training mean depth (the constant reference)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return x.double().cpu() @ self.w + self.b


def _solutions(n, sx, sy, sxx, sxy, lambdas) -> list[tuple[torch.Tensor, float]]:
    """Ridge (w, b) for each lambda from one training set's sums (standardised, intercept free)."""
    mu, ybar = sx / n, sy / n
    cov = sxx / n - torch.outer(mu, mu)                    # (D, D) covariance, biased
    var = cov.diagonal().clamp(min=0)
    sd = torch.where(var > 1e-12 * var.max().clamp(min=1e-300), var.sqrt(), torch.ones_like(var))
    C = cov / torch.outer(sd, sd)                          # standardised, centred Gram / n
    c = (sxy / n - mu * ybar) / sd
    e, V = torch.linalg.eigh(C)
    e, proj = e.clamp(min=0), V.T @ c
    out = []
    for lam in lambdas:
        beta = V @ (proj / (e + lam))
        w = beta / sd
        out.append((w, float(ybar - mu @ w)))
    return out


def _sse(stats: RidgeStats, k: int, w: torch.Tensor, b: float) -> float:
    """sum over fold k of (y - x.w - b)^2 from its sums."""
    return float(stats.syy[k] - 2 * (b * stats.sy[k] + w @ stats.sxy[k]) + stats.n[k] * b * b
                 + 2 * b * (w @ stats.sx[k]) + w @ stats.sxx[k] @ w)


def fit_ridge(stats: RidgeStats, lambdas=LAMBDAS) -> Ridge:
    """Choose lambda by leave-one-fold-out CV on depth MSE (ties: the larger lambda), refit on all."""
    if (stats.n == 0).any():
        raise DepthProbeError("a cross-validation fold holds no token with depth "
                              f"(tokens per fold: {stats.n.tolist()})")
    sse = np.zeros(len(lambdas))
    for k in range(stats.folds):
        for j, (w, b) in enumerate(_solutions(*stats.total(leave_out=k), lambdas)):
            sse[j] += _sse(stats, k, w, b)
    mse = sse / stats.n.sum()
    best = max(j for j in range(len(lambdas)) if mse[j] <= mse.min() * (1 + 1e-9))
    n, sx, sy, sxx, sxy = stats.total()
    (w, b), = _solutions(n, sx, sy, sxx, sxy, [lambdas[best]])
    return Ridge(w, b, float(lambdas[best]), mse.tolist(), float(sy / n))


# ---- metrics ---------------------------------------------------------------------------------
def scale_shift(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """s * pred + t with s, t the least-squares fit to gt (the mean of gt when pred is constant)."""
    pm, gm = pred.mean(), gt.mean()
    var = ((pred - pm) ** 2).sum()
    s = ((pred - pm) * (gt - gm)).sum() / var if var > 1e-300 else 0.0
    return s * (pred - pm) + gm


def image_metrics(pred: np.ndarray, gt: np.ndarray, eps: float) -> dict[str, dict[str, float]]:
    """{alignment: {metric: value}} on one image's tokens (pred, gt (n,) float64, gt > 0)."""
    out = {}
    for a in ALIGNMENTS:
        p = np.maximum(pred if a == "metric" else scale_shift(pred, gt), eps)
        ratio = np.maximum(p / gt, gt / p)
        out[a] = {"abs_rel": float(np.mean(np.abs(p - gt) / gt)),
                  "rmse_log": float(np.sqrt(np.mean((np.log(p) - np.log(gt)) ** 2))),
                  "delta_1.25": float(np.mean(ratio < 1.25))}
    return out


def mean_metrics(images: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float | None]]:
    return {a: {m: (float(np.mean([im[a][m] for im in images])) if images else None) for m in METRICS}
            for a in ALIGNMENTS}


# ---- the probe over a run --------------------------------------------------------------------
class DepthProbe:
    """Fit on probe-train sequences (``role="train"``), then score held-out ones (``role="eval"``).

    ``observe(name, feats, targets, fold)``: feats (F, P, D) tensor of one predictor (a layer
    number, or "pixels"), targets (F, P) float64 with NaN where a token has no depth.
    """

    def __init__(self, names: list[Any], folds: int):
        self.names, self.folds = list(names), folds
        self.stats: dict[Any, RidgeStats] = {}
        self.fits: dict[Any, Ridge] = {}
        self.images: dict[Any, list] = {k: [] for k in [*self.names, "constant"]}
        self.train_images = 0
        self.train_tokens = 0

    @property
    def fitted(self) -> bool:
        return bool(self.fits)

    def observe(self, name: Any, feats: torch.Tensor, targets: np.ndarray, fold: int | None = None) -> None:
        y = torch.from_numpy(targets.reshape(-1))                    # (F*P,)
        ok = torch.isfinite(y)
        x = feats.reshape(-1, feats.shape[-1])                       # (F*P, D)
        if not self.fitted:
            if name not in self.stats:
                self.stats[name] = RidgeStats(self.folds, x.shape[1])
            self.stats[name].add(x[ok.to(x.device)], y[ok], fold)
            if name == self.names[0]:
                self.train_tokens += int(ok.sum())
                self.train_images += int(np.isfinite(targets).any(axis=1).sum())
            return
        fit = self.fits[name]
        pred = fit.predict(x).numpy().reshape(targets.shape)         # (F, P)
        eps = EPS_REL * fit.mean_target
        for f in range(targets.shape[0]):
            m = np.isfinite(targets[f])
            if m.any():
                self.images[name].append(image_metrics(pred[f][m], targets[f][m], eps))
                if name == self.names[0]:
                    const = np.full(int(m.sum()), fit.mean_target)
                    self.images["constant"].append(image_metrics(const, targets[f][m], eps))

    def fit(self) -> None:
        missing = [n for n in self.names if n not in self.stats]
        if missing:
            raise DepthProbeError(f"no probe-train token reached the depth probe for {missing}")
        self.fits = {n: fit_ridge(self.stats[n]) for n in self.names}
        self.stats = {}                                              # free O(K D^2) per predictor

    def summary(self, layers: list[int]) -> dict[str, Any]:
        """results.json's ``depth`` block (``layers`` are the LLM layers, in order, -1 first)."""
        def block(name):
            fit = self.fits[name]
            return {**mean_metrics(self.images[name]), "lambda": fit.lam, "cv_mse": fit.cv_mse}

        per_layer = [block(layer) for layer in layers]
        return {"layers": layers,
                "metric": {m: [b["metric"][m] for b in per_layer] for m in METRICS},
                "scale_shift": {m: [b["scale_shift"][m] for b in per_layer] for m in METRICS},
                "lambda": [b["lambda"] for b in per_layer],
                "cv_mse": [b["cv_mse"] for b in per_layer],
                "references": {"pixels": block("pixels"), "constant": mean_metrics(self.images["constant"])},
                "lambdas": list(LAMBDAS), "folds": self.folds,
                "num_train_tokens": self.train_tokens, "num_train_images": self.train_images,
                "num_eval_images": len(self.images[layers[0]])}
