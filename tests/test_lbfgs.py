"""Per-row batched L-BFGS (sourcelens.fit.lbfgs) against scipy, and the Gauss–Newton preconditioner."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from sourcelens.fit.lbfgs import STATUS, gauss_newton_metric, inverse_sqrt, minimize_lbfgs

DT = torch.float64


def rosenbrock(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """A generalised Rosenbrock function whose target a = 1 + 0.1·row differs per row."""
    a = 1.0 + 0.1 * index.to(x.dtype)
    return ((a[:, None] - x[:, :-1]) ** 2).sum(1) + 100.0 * ((x[:, 1:] - x[:, :-1] ** 2) ** 2).sum(1)


@pytest.fixture(scope="module")
def start():
    return torch.randn(12, 6, generator=torch.Generator().manual_seed(0), dtype=DT)


def test_every_row_reaches_the_scipy_minimum(start):
    res = minimize_lbfgs(rosenbrock, start, max_iter=3000, tolerance_grad=1e-10, tolerance_change=0.0)
    assert set(res.status) <= set(STATUS) - {"running", "max_iter", "max_eval"}, res.status
    for i in range(len(start)):
        row = torch.tensor([i])

        def f(v):
            x = torch.tensor(v, dtype=DT)[None].requires_grad_(True)
            loss = rosenbrock(x, row).sum()
            loss.backward()
            return loss.item(), x.grad[0].numpy()

        ref = minimize(f, start[i].numpy(), jac=True, method="L-BFGS-B",
                       options={"maxiter": 10000, "ftol": 1e-15, "gtol": 1e-11})
        assert float(res.loss[i]) == pytest.approx(ref.fun, abs=1e-8)
        np.testing.assert_allclose(res.x[i].numpy(), ref.x, atol=1e-4)


def test_a_row_follows_the_same_path_alone_and_in_a_batch(start):
    batch = minimize_lbfgs(rosenbrock, start, max_iter=40)
    for i in (0, 5, 11):
        alone = minimize_lbfgs(lambda x, index: rosenbrock(x, index + i), start[i:i + 1], max_iter=40)
        assert alone.n_iter[0] == batch.n_iter[i] and alone.n_eval[0] == batch.n_eval[i]
        torch.testing.assert_close(alone.x[0], batch.x[i], rtol=0, atol=1e-12)


def test_converged_rows_leave_the_batch():
    """An easy row (a quadratic already near its minimum) stops early; later rounds evaluate only the rest."""
    sizes = []

    def objective(x, index):
        sizes.append(len(index))
        scale = torch.where(index == 0, 1.0, 1e3).to(x.dtype)  # row 1 is badly scaled: more iterations
        return 0.5 * (x[:, 0] ** 2 + scale * x[:, 1] ** 2) + 0.1 * (x ** 4).sum(1)

    x0 = torch.tensor([[1e-3, 1e-3], [3.0, -2.0]], dtype=DT)
    res = minimize_lbfgs(objective, x0, max_iter=200, tolerance_grad=1e-9, tolerance_change=0.0)
    assert res.converged.all()
    assert res.n_eval[0] < res.n_eval[1]
    assert sizes[0] == 2 and sizes[-1] == 1
    torch.testing.assert_close(res.x, torch.zeros_like(x0), atol=1e-6, rtol=0)


def test_chunked_evaluation_gives_the_same_fits(start):
    """``chunk_rows`` bounds the rows of one objective call (about equal chunks); the paths do not change."""
    sizes = []

    def counted(x, index):
        sizes.append(len(index))
        return rosenbrock(x, index)

    whole = minimize_lbfgs(rosenbrock, start, max_iter=40)
    chunked = minimize_lbfgs(counted, start, max_iter=40, chunk_rows=5)
    assert sizes[:3] == [4, 4, 4] and max(sizes) <= 5
    np.testing.assert_array_equal(chunked.n_eval, whole.n_eval)
    torch.testing.assert_close(chunked.x, whole.x, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="chunk_rows"):
        minimize_lbfgs(rosenbrock, start, chunk_rows=0)


def test_patience_waits_for_consecutive_small_decreases(start):
    """With ``patience`` k a row stops only after k small decreases in a row: it follows the same path as
    with k − 1 and stops at the same iterate or later, at the same loss or lower; never before k iterations."""
    runs = {k: minimize_lbfgs(rosenbrock, start, max_iter=500, tolerance_change=1e-2, tolerance_grad=0.0,
                              patience=k) for k in (1, 2, 3)}
    for short, long in ((runs[1], runs[2]), (runs[2], runs[3])):
        assert (long.n_iter >= short.n_iter).all()
        assert (long.loss <= short.loss).all()
        assert (long.n_iter > short.n_iter).any()
        same = long.n_iter == short.n_iter
        torch.testing.assert_close(long.x[same], short.x[same], rtol=0, atol=0)
    assert (runs[3].n_iter[runs[3].status == "change"] >= 3).all()
    # the patient run on the way: stopping it at the impatient run's iteration count lands on the same iterate
    cut = minimize_lbfgs(rosenbrock, start[:1], max_iter=int(runs[1].n_iter[0]), tolerance_change=1e-2,
                         tolerance_grad=0.0, patience=2)
    torch.testing.assert_close(cut.x[0], runs[1].x[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="patience"):
        minimize_lbfgs(rosenbrock, start, patience=0)


def test_limits_and_bad_objectives(start):
    res = minimize_lbfgs(rosenbrock, start, max_iter=3, tolerance_change=0.0, tolerance_grad=0.0)
    assert (res.n_iter <= 3).all() and "max_iter" in set(res.status)
    # a trial step into a region where the objective is not finite is shortened, not accepted
    wall = lambda x, index: torch.where(x[:, 0] < 0.5, (x ** 2).sum(1), torch.full_like(x[:, 0], float("nan")))
    res = minimize_lbfgs(wall, torch.tensor([[-3.0, 1.0]], dtype=DT), max_iter=100, tolerance_grad=1e-10)
    assert torch.isfinite(res.loss).all() and float(res.loss[0]) < 1e-12
    with pytest.raises(ValueError, match="not finite at the starting point of rows \\[1\\]"):
        minimize_lbfgs(lambda x, index: x.sum(1) / (1 - index), torch.zeros(2, 3, dtype=DT))
    with pytest.raises(ValueError, match="one loss per row"):
        minimize_lbfgs(lambda x, index: x.sum(), torch.zeros(2, 3, dtype=DT))


def test_gauss_newton_metric_of_linear_residuals_is_exact():
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(3, 20, 5, generator=gen, dtype=DT)   # one residual matrix per galaxy
    b = torch.randn(3, 20, generator=gen, dtype=DT)

    def residuals(x, index):
        return torch.einsum("nrp,np->nr", a[index], x) - b[index]

    x = torch.randn(3, 5, generator=gen, dtype=DT)
    exact = torch.einsum("nrp,nrq->pq", a, a) / 3
    for differences in ("forward", "central"):
        metric = gauss_newton_metric(residuals, x, torch.arange(3), chunk=7, differences=differences)
        torch.testing.assert_close(metric, exact, rtol=1e-9, atol=1e-9)
    m = inverse_sqrt(metric)
    torch.testing.assert_close(m @ metric @ m, torch.eye(5, dtype=DT), rtol=0, atol=1e-9)
    torch.testing.assert_close(m, m.T)
