"""Many independent L-BFGS minimisations at once: one per row of a (B, P) parameter tensor.

Fitting a batch of galaxies is B independent problems that share a model (the decoder), so the
model evaluation should be batched while everything else stays per galaxy. One
``torch.optim.LBFGS`` over the whole batch does not do that: it minimises the *sum* of the
losses with one curvature memory and one step length, so a galaxy far from its optimum sets the
step for all, and the run stops when the sum stops changing. Here every row has its own
curvature pairs, step length, line search and stopping test; each round evaluates the objective
once at the trial points of the rows still running (the active rows only, so the batch shrinks
as galaxies converge). A row's path does not depend on the other rows: a galaxy fitted in a
batch of 256 follows the same iterates as fitted alone (up to floating-point reduction order).

Algorithm per row (Nocedal & Wright, *Numerical Optimization*, 2nd ed., Alg. 7.4–7.5 and 3.1):
two-loop recursion over the last ``history_size`` pairs (s, y) with the initial Hessian
γI, γ = sᵀy / yᵀy of the newest pair; a pair is stored only if sᵀy > 0 (keeps the inverse
Hessian positive definite); backtracking line search from t = 1 (t = min(1, 1/‖g‖₁) on the
first iteration, as ``torch.optim.LBFGS``) with the Armijo condition and safeguarded quadratic
interpolation; a row whose line search fails restarts once from steepest descent with an empty
memory, then stops.

Stopping (per row): ‖g‖_∞ ≤ ``tolerance_grad`` ("gradient"); decrease of the objective over
the last quasi-Newton iteration ≤ ``tolerance_change`` (in the units of the objective, e.g. ½χ²;
not tested on steepest-descent steps, whose length is arbitrary) or step ‖Δx‖_∞ ≤
``tolerance_step`` (in the units of x) ("change"); ``max_iter`` iterations ("max_iter") or
``max_eval`` evaluations ("max_eval"); no progress after a restart ("line_search").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

STATUS = ("running", "gradient", "change", "max_iter", "max_eval", "line_search")
_RUN, _GRAD, _CHANGE, _MAXIT, _MAXEV, _LS = range(len(STATUS))

Objective = Callable[[Tensor, Tensor], Tensor]


@dataclass
class BatchedLBFGSResult:
    """Per-row result of :func:`minimize_lbfgs` (rows are the problems)."""

    x: Tensor           # (B, P) minimiser
    loss: Tensor        # (B,) objective at x
    grad: Tensor        # (B, P) gradient at x
    n_iter: np.ndarray  # (B,) accepted iterations
    n_eval: np.ndarray  # (B,) objective evaluations (including the first)
    status: np.ndarray  # (B,) why each row stopped, one of STATUS
    n_rounds: int       # batched objective calls

    @property
    def converged(self) -> np.ndarray:
        """Rows stopped by a tolerance (not by an iteration/evaluation limit or a failed line search)."""
        return np.isin(self.status, ("gradient", "change"))


def _evaluate(objective: Objective, x: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = objective(x, index)
        if loss.shape != (x.shape[0],):
            raise ValueError(f"the objective must return one loss per row, shape ({x.shape[0]},), "
                             f"got {tuple(loss.shape)}")
        (grad,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), grad.detach()


def _direction(g: Tensor, s_hist: Tensor, y_hist: Tensor, rho: Tensor, gamma: Tensor) -> Tensor:
    """−H g by the two-loop recursion; history slots with ρ = 0 are empty and drop out (slots empty
    in every row are skipped: new pairs enter at the end, so those are the first ones)."""
    filled = torch.nonzero(rho.ne(0).any(0))
    first = int(filled[0]) if filled.numel() else rho.shape[1]
    q = -g
    alphas = {}
    for i in range(rho.shape[1] - 1, first - 1, -1):  # newest (last slot) to oldest
        alphas[i] = rho[:, i] * torch.linalg.vecdot(s_hist[:, i], q)
        q = q - alphas[i][:, None] * y_hist[:, i]
    r = gamma[:, None] * q
    for i in range(first, rho.shape[1]):
        beta = rho[:, i] * torch.linalg.vecdot(y_hist[:, i], r)
        r = r + (alphas[i] - beta)[:, None] * s_hist[:, i]
    return r


def _first_step(g: Tensor) -> Tensor:
    return torch.clamp(1.0 / g.abs().sum(1).clamp_min(torch.finfo(g.dtype).tiny), max=1.0)


def minimize_lbfgs(
    objective: Objective,
    x0: Tensor,
    *,
    max_iter: int = 200,
    max_eval: int | None = None,
    history_size: int = 20,
    tolerance_grad: float = 1e-7,
    tolerance_change: float = 1e-9,
    tolerance_step: float = 1e-9,
    armijo: float = 1e-4,
    max_backtracks: int = 12,
    unit_first_step: bool = False,
    callback: Callable[[int, int], None] | None = None,
) -> BatchedLBFGSResult:
    """Minimise ``objective(x, index) -> (b,)`` independently for each row of ``x0`` (B, P).

    ``objective`` gets the current points of some rows, ``x`` (b, P), and their row numbers
    ``index`` (b,) (a LongTensor into the B rows, for per-row data such as images or noise maps),
    and returns their b losses; row i of the result may depend on row i of ``x`` only (no batch
    statistics: put models in eval mode). Gradients come from autograd. ``max_eval`` defaults to
    1.25 × ``max_iter`` + 1, as in ``torch.optim.LBFGS``. ``unit_first_step``: the first line search
    starts at t = 1 instead of min(1, 1/‖g‖₁) (for preconditioned problems, where −g is already
    about the Newton step). ``callback(n_rounds, n_active)`` is
    called after every batched evaluation (e.g. a progress bar). See the module docstring.
    """
    if x0.ndim != 2:
        raise ValueError(f"x0 must be (rows, parameters), got shape {tuple(x0.shape)}")
    max_iter = int(max_iter)
    max_eval = int(max_eval) if max_eval is not None else int(max_iter * 1.25) + 1
    b, p = x0.shape
    dev, dt = x0.device, x0.dtype
    all_rows = torch.arange(b, device=dev)
    x = x0.detach().clone()
    f, g = _evaluate(objective, x, all_rows)
    if not torch.isfinite(f).all():
        bad = torch.nonzero(~torch.isfinite(f)).flatten().tolist()
        raise ValueError(f"the objective is not finite at the starting point of rows {bad[:10]}")
    n_iter = torch.zeros(b, dtype=torch.long, device=dev)
    n_eval = torch.ones(b, dtype=torch.long, device=dev)
    status = torch.full((b,), _RUN, dtype=torch.long, device=dev)
    status[g.abs().amax(1) <= tolerance_grad] = _GRAD
    m = max(1, int(history_size))
    s_hist = torch.zeros(b, m, p, dtype=dt, device=dev)
    y_hist = torch.zeros(b, m, p, dtype=dt, device=dev)
    rho = torch.zeros(b, m, dtype=dt, device=dev)
    gamma = torch.ones(b, dtype=dt, device=dev)
    d = -g
    t = torch.ones_like(f) if unit_first_step else _first_step(g)
    gtd = (g * d).sum(1)
    backtracks = torch.zeros(b, dtype=torch.long, device=dev)
    restarted = torch.zeros(b, dtype=torch.bool, device=dev)
    rounds = 1
    if callback is not None:
        callback(rounds, int((status == _RUN).sum()))

    while True:
        rows = torch.nonzero(status == _RUN).flatten()
        if rows.numel() == 0:
            break
        xt = x[rows] + t[rows, None] * d[rows]
        ft, gt = _evaluate(objective, xt, rows)
        rounds += 1
        n_eval[rows] += 1
        ok = torch.isfinite(ft) & torch.isfinite(gt).all(1) & (ft <= f[rows] + armijo * t[rows] * gtd[rows])

        # --- accepted steps: update the memory, test convergence, new direction -------------------
        acc = rows[ok]
        if acc.numel():
            s = xt[ok] - x[acc]
            y = gt[ok] - g[acc]
            quasi_newton = rho[acc].abs().sum(1) > 0  # the step used curvature pairs (not steepest descent)
            sy = (s * y).sum(1)
            yy = (y * y).sum(1)
            store = sy > torch.finfo(dt).eps * torch.sqrt((s * s).sum(1) * yy)
            if store.any():
                r = acc[store]
                s_hist[r] = torch.cat([s_hist[r, 1:], s[store, None]], 1)
                y_hist[r] = torch.cat([y_hist[r, 1:], y[store, None]], 1)
                rho[r] = torch.cat([rho[r, 1:], (1.0 / sy[store])[:, None]], 1)
                gamma[r] = sy[store] / yy[store]
            decrease = f[acc] - ft[ok]
            x[acc], f[acc], g[acc] = xt[ok], ft[ok], gt[ok]
            n_iter[acc] += 1
            backtracks[acc] = 0
            restarted[acc] = False
            st = torch.full_like(acc, _RUN)
            st = torch.where(n_eval[acc] >= max_eval, _MAXEV, st)
            st = torch.where(n_iter[acc] >= max_iter, _MAXIT, st)
            small = (decrease <= tolerance_change) & quasi_newton
            st = torch.where(small | (s.abs().amax(1) <= tolerance_step), _CHANGE, st)
            st = torch.where(gt[ok].abs().amax(1) <= tolerance_grad, _GRAD, st)
            status[acc] = st
            go = acc[st == _RUN]
            if go.numel():
                d[go] = _direction(g[go], s_hist[go], y_hist[go], rho[go], gamma[go])
                gtd[go] = (g[go] * d[go]).sum(1)
                t[go] = 1.0
                uphill = gtd[go] > -tolerance_change
                status[go[uphill]] = _CHANGE

        # --- rejected steps: shorter step, or restart from steepest descent, or stop ---------------
        rej_mask = ~ok
        rej = rows[rej_mask]
        if rej.numel():
            backtracks[rej] += 1
            t_old, f0, slope, fr = t[rej], f[rej], gtd[rej], ft[rej_mask]
            curvature = fr - f0 - slope * t_old
            t_quad = -slope * t_old**2 / (2.0 * curvature)
            t_new = torch.where(torch.isfinite(t_quad) & (curvature > 0), t_quad, 0.1 * t_old)
            t_new = torch.minimum(torch.maximum(t_new, 0.1 * t_old), 0.5 * t_old)
            t[rej] = t_new
            stuck = (backtracks[rej] > max_backtracks) | (t_new * d[rej].abs().amax(1) <= tolerance_step)
            stuck &= n_eval[rej] < max_eval
            status[rej[n_eval[rej] >= max_eval]] = _MAXEV
            if stuck.any():
                sr = rej[stuck]
                retry = sr[~restarted[sr]]
                status[sr[restarted[sr]]] = _LS
                if retry.numel():
                    s_hist[retry] = 0.0
                    y_hist[retry] = 0.0
                    rho[retry] = 0.0
                    gamma[retry] = 1.0
                    d[retry] = -g[retry]
                    gtd[retry] = (g[retry] * d[retry]).sum(1)
                    t[retry] = _first_step(g[retry])
                    backtracks[retry] = 0
                    restarted[retry] = True
        if callback is not None:
            callback(rounds, int((status == _RUN).sum()))

    return BatchedLBFGSResult(
        x=x, loss=f, grad=g, n_iter=n_iter.cpu().numpy(), n_eval=n_eval.cpu().numpy(),
        status=np.asarray(STATUS, dtype=object)[status.cpu().numpy()], n_rounds=rounds,
    )


__all__ = ["BatchedLBFGSResult", "STATUS", "minimize_lbfgs"]
