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
each of the last ``patience`` quasi-Newton iterations ≤ ``tolerance_change`` (in the units of the
objective, e.g. ½χ²; not tested on steepest-descent steps, whose length is arbitrary) or step ‖Δx‖_∞ ≤
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


def _evaluate(objective: Objective, x: Tensor, index: Tensor, chunk_rows: int | None = None
              ) -> tuple[Tensor, Tensor]:
    """Losses and gradients at the rows ``x``; in about equal chunks of at most ``chunk_rows`` rows."""
    n = x.shape[0]
    if chunk_rows is not None and n > chunk_rows:
        size = -(-n // -(-n // chunk_rows))   # ceil(n / number of chunks): equal chunks
        parts = [_evaluate(objective, x[i:i + size], index[i:i + size]) for i in range(0, n, size)]
        return torch.cat([f for f, _ in parts]), torch.cat([g for _, g in parts])
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
    s_slots, y_slots, rho_slots = s_hist.unbind(1), y_hist.unbind(1), rho.unbind(1)
    q = -g
    alphas = {}
    for i in range(rho.shape[1] - 1, first - 1, -1):  # newest (last slot) to oldest
        alphas[i] = rho_slots[i] * torch.linalg.vecdot(s_slots[i], q)
        q = torch.addcmul(q, alphas[i][:, None], y_slots[i], value=-1.0)
    r = gamma[:, None] * q
    for i in range(first, rho.shape[1]):
        beta = rho_slots[i] * torch.linalg.vecdot(y_slots[i], r)
        r = torch.addcmul(r, (alphas[i] - beta)[:, None], s_slots[i])
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
    chunk_rows: int | None = None,
    patience: int = 1,
    callback: Callable[[int, int], None] | None = None,
) -> BatchedLBFGSResult:
    """Minimise ``objective(x, index) -> (b,)`` independently for each row of ``x0`` (B, P).

    ``objective`` gets the current points of some rows, ``x`` (b, P), and their row numbers
    ``index`` (b,) (a LongTensor into the B rows, for per-row data such as images or noise maps),
    and returns their b losses; row i of the result may depend on row i of ``x`` only (no batch
    statistics: put models in eval mode). Gradients come from autograd. ``max_eval`` defaults to
    1.25 × ``max_iter`` + 1, as in ``torch.optim.LBFGS``. ``unit_first_step``: the first line search
    starts at t = 1 instead of min(1, 1/‖g‖₁) (for preconditioned problems, where −g is already
    about the Newton step). ``chunk_rows``: evaluate the objective on at most this many rows at a
    time (same results, rows being independent; a smaller working set: on CPUs a decoder's feature
    maps for ~128 galaxies stay in cache, which is faster than 256 at once). ``patience``: the
    change test must hold on this many consecutive quasi-Newton iterations before a row stops (1, as
    scipy; 2 does not stop on one short step in a long, curved valley, where progress resumes).
    ``callback(n_rounds, n_active)`` is called after every batched evaluation (e.g. a progress bar).
    See the module docstring.
    """
    if x0.ndim != 2:
        raise ValueError(f"x0 must be (rows, parameters), got shape {tuple(x0.shape)}")
    if int(patience) < 1:
        raise ValueError(f"patience must be a positive number of iterations, not {patience!r}")
    if chunk_rows is not None and int(chunk_rows) < 1:
        raise ValueError(f"chunk_rows must be a positive number of rows or None, not {chunk_rows!r}")
    max_iter = int(max_iter)
    max_eval = int(max_eval) if max_eval is not None else int(max_iter * 1.25) + 1
    b, p = x0.shape
    dev, dt = x0.device, x0.dtype
    ids = torch.arange(b, device=dev)        # row numbers of the rows still running
    x = x0.detach().clone()
    f, g = _evaluate(objective, x, ids, chunk_rows)
    if not torch.isfinite(f).all():
        bad = torch.nonzero(~torch.isfinite(f)).flatten().tolist()
        raise ValueError(f"the objective is not finite at the starting point of rows {bad[:10]}")
    out_x, out_f, out_g = x.clone(), f.clone(), g.clone()
    out_iter = torch.zeros(b, dtype=torch.long, device=dev)
    out_eval = torch.ones(b, dtype=torch.long, device=dev)
    out_status = torch.full((b,), _RUN, dtype=torch.long, device=dev)
    # the state of the running rows, compacted: rows leave every tensor when they stop
    n_iter, n_eval = out_iter.clone(), out_eval.clone()
    status = torch.where(g.abs().amax(1) <= tolerance_grad, _GRAD, _RUN)
    m = max(1, int(history_size))
    s_hist = torch.zeros(b, m, p, dtype=dt, device=dev)
    y_hist = torch.zeros(b, m, p, dtype=dt, device=dev)
    rho = torch.zeros(b, m, dtype=dt, device=dev)   # 1 / sᵀy; 0 marks an empty slot
    gamma = torch.ones(b, dtype=dt, device=dev)
    d = -g
    t = torch.ones_like(f) if unit_first_step else _first_step(g)
    gtd = torch.linalg.vecdot(g, d)
    backtracks = torch.zeros(b, dtype=torch.long, device=dev)
    restarted = torch.zeros(b, dtype=torch.bool, device=dev)
    n_small = torch.zeros(b, dtype=torch.long, device=dev)   # consecutive small decreases
    state = [ids, x, f, g, n_iter, n_eval, status, s_hist, y_hist, rho, gamma, d, t, gtd, backtracks, restarted,
             n_small]

    def retire(state: list[Tensor]) -> list[Tensor]:
        """Write the stopped rows to the outputs and drop them from the state."""
        ids, x, f, g, n_iter, n_eval, status = state[:7]
        done = status != _RUN
        if not bool(done.any()):
            return state
        r = ids[done]
        out_x[r], out_f[r], out_g[r] = x[done], f[done], g[done]
        out_iter[r], out_eval[r], out_status[r] = n_iter[done], n_eval[done], status[done]
        keep = torch.nonzero(~done).flatten()
        return [v[keep] for v in state]

    state = retire(state)
    rounds = 1
    if callback is not None:
        callback(rounds, len(state[0]))
    eps = torch.finfo(dt).eps
    while len(state[0]):
        (ids, x, f, g, n_iter, n_eval, status, s_hist, y_hist, rho, gamma, d, t, gtd, backtracks, restarted,
         n_small) = state
        xt = x + t[:, None] * d
        ft, gt = _evaluate(objective, xt, ids, chunk_rows)
        rounds += 1
        n_eval = n_eval + 1
        ok = torch.isfinite(ft) & torch.isfinite(gt).all(1) & (ft <= f + armijo * t * gtd)
        okc = ok[:, None]

        # --- accepted steps: update the memory, test convergence, new direction -------------------
        s = xt - x
        y = gt - g
        quasi_newton = rho[:, -1] != 0   # the step used curvature pairs (newest pair in the last slot)
        sy = torch.linalg.vecdot(s, y)
        yy = torch.linalg.vecdot(y, y)
        store = ok & (sy > eps * torch.sqrt(torch.linalg.vecdot(s, s) * yy))
        if bool(store.any()):
            sc = store[:, None]
            s_hist = torch.where(sc[:, :, None], torch.cat([s_hist[:, 1:], s[:, None]], 1), s_hist)
            y_hist = torch.where(sc[:, :, None], torch.cat([y_hist[:, 1:], y[:, None]], 1), y_hist)
            rho = torch.where(sc, torch.cat([rho[:, 1:], (1.0 / sy)[:, None]], 1), rho)
            gamma = torch.where(store, sy / yy, gamma)
        decrease = f - ft
        x, f, g = torch.where(okc, xt, x), torch.where(ok, ft, f), torch.where(okc, gt, g)
        n_iter = n_iter + ok
        backtracks = torch.where(ok, 0, backtracks + 1)
        restarted = restarted & ~ok
        st = torch.where(n_eval >= max_eval, _MAXEV, _RUN)
        st = torch.where(n_iter >= max_iter, _MAXIT, st)
        small = (decrease <= tolerance_change) & quasi_newton
        n_small = torch.where(ok, torch.where(small, n_small + 1, 0), n_small)
        small = n_small >= patience
        st = torch.where(small | (s.abs().amax(1) <= tolerance_step), _CHANGE, st)
        st = torch.where(gt.abs().amax(1) <= tolerance_grad, _GRAD, st)
        go = ok & (st == _RUN)
        if bool(go.any()):
            new_d = _direction(g, s_hist, y_hist, rho, gamma)
            new_gtd = torch.linalg.vecdot(g, new_d)
            d, gtd, t = torch.where(go[:, None], new_d, d), torch.where(go, new_gtd, gtd), torch.where(go, 1.0, t)
            # no descent left: the next step would be one more small decrease
            st = torch.where(go & (new_gtd > -tolerance_change) & (n_small + 1 >= patience), _CHANGE, st)
        status = torch.where(ok, st, status)

        # --- rejected steps: shorter step, or restart from steepest descent, or stop ---------------
        rej = ~ok
        if bool(rej.any()):
            curvature = ft - f - gtd * t
            t_quad = -gtd * t**2 / (2.0 * curvature)
            t_new = torch.where(torch.isfinite(t_quad) & (curvature > 0), t_quad, 0.1 * t)
            t_new = torch.minimum(torch.maximum(t_new, 0.1 * t), 0.5 * t)
            t = torch.where(rej, t_new, t)
            out_of_evals = rej & (n_eval >= max_eval)
            status = torch.where(out_of_evals, _MAXEV, status)
            stuck = rej & ~out_of_evals & ((backtracks > max_backtracks)
                                           | (t_new * d.abs().amax(1) <= tolerance_step))
            if bool(stuck.any()):
                status = torch.where(stuck & restarted, _LS, status)
                retry = stuck & ~restarted
                rc = retry[:, None]
                s_hist = torch.where(rc[:, :, None], 0.0, s_hist)
                y_hist = torch.where(rc[:, :, None], 0.0, y_hist)
                rho = torch.where(rc, 0.0, rho)
                gamma = torch.where(retry, 1.0, gamma)
                d = torch.where(rc, -g, d)
                gtd = torch.where(retry, torch.linalg.vecdot(g, -g), gtd)
                t = torch.where(retry, _first_step(g), t)
                backtracks = torch.where(retry, 0, backtracks)
                restarted = restarted | retry
        state = retire([ids, x, f, g, n_iter, n_eval, status, s_hist, y_hist, rho, gamma, d, t, gtd, backtracks,
                        restarted, n_small])
        if callback is not None:
            callback(rounds, len(state[0]))

    return BatchedLBFGSResult(
        x=out_x, loss=out_f, grad=out_g, n_iter=out_iter.cpu().numpy(), n_eval=out_eval.cpu().numpy(),
        status=np.asarray(STATUS, dtype=object)[out_status.cpu().numpy()], n_rounds=rounds,
    )


# --------------------------------------------------------------------------------------------
# Preconditioning: whitened coordinates θ = θ₀ + H^(−½) u, so that a unit step in u is about a Newton step
# --------------------------------------------------------------------------------------------
def gauss_newton_metric(residuals: Callable[[Tensor, Tensor], Tensor], x: Tensor, index: Tensor,
                        step: float = 1e-2, chunk: int = 512, differences: str = "central",
                        per_point: bool = False) -> Tensor:
    """Gauss–Newton matrix JᵀJ of ``residuals(x, index) -> (n, R)`` at the n points x (n, P): their mean
    (P, P), or with ``per_point`` one per point (n, P, P) (to precondition each row of a batch).

    J by finite differences of step ``step`` (parameters are O(1): latents, pixels, log scale),
    ``differences`` "central" (2P model evaluations a galaxy, error O(step²)) or "forward" (P + 1,
    error O(step): half the cost, but on the benchmark galaxies its cruder metric cost more L-BFGS
    evaluations than it saved); ``chunk`` perturbed points at a time. No
    forward-mode AD: a user's ``forward`` need not support it. Exact for linear residuals.
    """
    n, p = x.shape
    delta = step * torch.eye(p, dtype=x.dtype, device=x.device)
    if differences == "central":
        points = torch.cat([(x[:, None, :] + delta).reshape(-1, p), (x[:, None, :] - delta).reshape(-1, p)])
        rows = torch.cat([index.repeat_interleave(p)] * 2)
    elif differences == "forward":
        points = torch.cat([(x[:, None, :] + delta).reshape(-1, p), x])
        rows = torch.cat([index.repeat_interleave(p), index])
    else:
        raise ValueError(f"differences must be 'forward' or 'central', not {differences!r}")
    r = torch.cat([residuals(points[i:i + chunk], rows[i:i + chunk]) for i in range(0, len(points), chunk)])
    plus = r[: n * p].reshape(n, p, -1)
    if differences == "central":
        jac = (plus - r[n * p:].reshape(n, p, -1)) / (2.0 * step)   # (n, P, R): row j = ∂r/∂x_j
    else:
        jac = (plus - r[n * p:, None, :]) / step
    if per_point:
        return torch.einsum("npr,nqr->npq", jac.double(), jac.double()).to(x.dtype)
    return torch.einsum("npr,nqr->pq", jac.double(), jac.double()).div(n).to(x.dtype)


def inverse_sqrt(matrix: Tensor, floor: float = 1e-8) -> Tensor:
    """Symmetric inverse square root of positive semi-definite matrices (…, P, P), eigenvalues floored at
    ``floor`` × the largest (a direction the data do not constrain keeps a finite step)."""
    lam, vec = torch.linalg.eigh(matrix.double())
    lam = lam.clamp_min(floor * lam.amax(-1, keepdim=True).clamp_min(1e-300))
    return ((vec * lam.rsqrt()[..., None, :]) @ vec.transpose(-1, -2)).to(matrix.dtype)


__all__ = ["BatchedLBFGSResult", "STATUS", "gauss_newton_metric", "inverse_sqrt", "minimize_lbfgs"]
