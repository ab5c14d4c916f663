"""OP-Mix's mathematics: proxy design, the log-linear mixing law, the KL-regularized proposer.

Reference: M. Y. Hu, A. Gandhi, K. Cho, T. Linzen, P. Sharma, "Always Learning, Always Mixing:
Efficient and Simple Data Mixing All The Time", arXiv:2605.15220 (OP-Mix), and its code
(michahu/on-policy-mix, ``pipeline/olmix_fit.py``, itself adapted from allenai/olmix and the
mixing-laws code of Ye et al.). Pure numpy + scipy; the policy lives in
:mod:`streammix.mixing.opmix`.

**Proxy design.** A proxy is the model plus a mixture ``x`` of per-domain LoRA deltas,
``W + sum_j x_j dW_j``; ``x`` on the simplex plays the part of a data mixture. The design
is the ``m`` vertices ``e_j`` (each adapter alone) followed by ``k`` draws from a symmetric
``Dirichlet(alpha)``, drawn from ``numpy.random.default_rng([seed, PURPOSE, round])``.

**Mixing law.** For every evaluation domain ``i`` the held-out losses ``y_{p,i}`` of the
proxies ``x_p`` are fitted with

    y_i(x) = exp(c_i) + exp(t_i . x)

by minimizing the summed Huber loss ``sum_p H_delta(y_i(x_p) - y_{p,i})`` (``delta = 0.02``
as in the reference) with L-BFGS (``scipy.optimize.minimize``, analytic gradient) from many
starts; the lowest final Huber loss wins (the first on ties). Starts are the reference's
grid: ``c`` cycles through ``linspace(-2, 1.5, 10)``; ``t`` is drawn with
``t_i ~ -U(0, 1)`` for the evaluation domain's own training domain (when evaluation and
training domains coincide) and ``t_j ~ U(0, 0.1)`` otherwise, seeded per evaluation domain.

**Proposer.** With slopes ``T`` (row ``i`` = ``t_i``), ``n`` evaluation domains, their
target weights ``w`` (the held-out mix the run is for; ``w_i = 1/n``, the reference's equal
weights, unless given) and prior ``q`` the next mixture is

    x* = argmin_{x in simplex} F(x),   F(x) = sum_i w_i exp(t_i . x) + lambda KL(x || q)

(``lambda = 0.05`` in the reference; the constant ``exp(c_i)`` does not move the argmin;
an evaluation domain with ``w_i = 0`` drops out).
``F`` is strictly convex for ``lambda > 0``; ``x*_j = 0`` exactly where ``q_j = 0`` and
``x*_j > 0`` elsewhere. Stationarity on the support ``S`` of ``q`` reads

    g_j(x) + lambda (log(x_j / q_j) + 1) = mu   for all j in S,  g = T^T (w * exp(T x)),

so ``x* = softmax_S(log q - T^T nu / lambda)`` with ``nu = w * exp(T x*)``. streammix solves
the concave dual in ``nu > 0`` (over the evaluation domains with ``w_i > 0``),

    D(nu) = sum_i (nu_i - nu_i log(nu_i / w_i)) - lambda log sum_{j in S} q_j exp(-(T^T nu)_j / lambda),

whose gradient is ``T x(nu) - log(nu / w)``, by damped Newton steps (exact Hessian, Armijo
backtracking; a step ``d`` is taken as ``nu * exp(alpha d / nu)``, the same to first order,
so ``nu`` stays positive without shortening the step), then maps back to ``x``. It stops
when the Newton decrement or the dual gradient reaches ~1e-12 (relative), or, for very steep
laws whose ``x(nu)`` cannot be resolved that finely, when the gradient (below 1e-6) has
stopped improving. This is exact up to float
rounding (the reference calls cvxpy/ECOS). :func:`kkt_residual` checks the stationarity
above directly on the primal, and ``lambda -> inf`` gives ``x* -> q`` (``lambda = inf``
returns ``q``). The reference floors ``q`` at 1e-12 so every domain stays reachable;
streammix keeps ``q`` as given, so a domain with zero prior weight stays at zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from streammix.mixing.protocol import check_weights

PURPOSE_OPMIX_DESIGN = 0x4F504D58  # "OPMX": key-space tag of the proxy design draws
EXPONENT_CLIP = 60.0  # exp() arguments are clipped here (the law then saturates, smoothly)
LOG_C_GRID = np.linspace(-2.0, 1.5, 10)
STALL_STEPS = 8  # Newton steps without halving the dual gradient: working precision reached
STALL_TOLERANCE = 1e-6  # ... if the gradient is below this (times max(1, |log(n nu)|))


# ----------------------------------------------------------------------------- design


def proxy_design(
    num_domains: int, num_random: int, *, alpha: float = 1.0, seed: int = 0, round_index: int = 0
) -> np.ndarray:
    """``(num_domains + num_random, num_domains)``: the vertices, then Dirichlet draws."""
    if num_domains < 1 or num_random < 0:
        raise ValueError(f"need num_domains >= 1 and num_random >= 0, got {num_domains}, "
                         f"{num_random}")
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a positive finite number, got {alpha}")
    vertices = np.eye(num_domains)
    if num_random == 0:
        return vertices
    rng = np.random.default_rng([seed, PURPOSE_OPMIX_DESIGN, round_index])
    draws = rng.dirichlet(np.full(num_domains, float(alpha)), size=num_random)
    draws /= draws.sum(axis=1, keepdims=True)
    return np.concatenate([vertices, draws])


# ----------------------------------------------------------------------------- the law


@dataclass(frozen=True, kw_only=True)
class LawFit:
    """Fitted ``y_i(x) = exp(log_c[i]) + exp(slopes[i] . x)`` for every evaluation domain."""

    log_c: np.ndarray  # (n,)
    slopes: np.ndarray  # (n, m)
    huber: np.ndarray  # (n,) the final summed Huber loss of each fit

    def predict(self, mixtures: np.ndarray) -> np.ndarray:
        """``(P, n)`` predicted losses at the rows of ``mixtures``."""
        x = np.atleast_2d(np.asarray(mixtures, dtype=np.float64))
        return np.exp(self.log_c)[None, :] + np.exp(x @ self.slopes.T)


def law(params: np.ndarray, mixtures: np.ndarray) -> np.ndarray:
    """``exp(params[0]) + exp(mixtures @ params[1:])`` (exponents clipped at EXPONENT_CLIP)."""
    return np.exp(min(params[0], EXPONENT_CLIP)) + np.exp(
        np.minimum(mixtures @ params[1:], EXPONENT_CLIP)
    )


def huber_objective(
    params: np.ndarray, mixtures: np.ndarray, targets: np.ndarray, delta: float
) -> tuple[float, np.ndarray]:
    """Summed Huber loss of the law's residuals and its gradient in ``params``."""
    log_c, exponent = params[0], mixtures @ params[1:]
    c_term = math.exp(min(log_c, EXPONENT_CLIP))
    t_term = np.exp(np.minimum(exponent, EXPONENT_CLIP))
    residual = c_term + t_term - targets
    small = np.abs(residual) <= delta
    value = np.where(small, 0.5 * residual**2, delta * (np.abs(residual) - 0.5 * delta)).sum()
    psi = np.where(small, residual, delta * np.sign(residual))
    grad = np.empty_like(params)
    grad[0] = psi.sum() * c_term if log_c < EXPONENT_CLIP else 0.0
    grad[1:] = mixtures.T @ (psi * np.where(exponent < EXPONENT_CLIP, t_term, 0.0))
    return float(value), grad


def initial_params(
    num_starts: int, num_domains: int, own_domain: int | None, seed: int
) -> np.ndarray:
    """``(num_starts, 1 + m)`` starts: the reference's ``c`` grid and random slopes."""
    rng = np.random.default_rng([seed, PURPOSE_OPMIX_DESIGN + 1,
                                 0 if own_domain is None else 1 + own_domain])
    starts = np.empty((num_starts, 1 + num_domains))
    starts[:, 0] = LOG_C_GRID[np.arange(num_starts) % LOG_C_GRID.size]
    starts[:, 1:] = rng.uniform(0.0, 0.1, size=(num_starts, num_domains))
    if own_domain is not None:
        starts[:, 1 + own_domain] = -rng.uniform(0.0, 1.0, size=num_starts)
    return starts


def fit_one(
    mixtures: np.ndarray,
    targets: np.ndarray,
    *,
    own_domain: int | None = None,
    num_starts: int = 64,
    delta: float = 0.02,
    max_iter: int = 500,
    seed: int = 0,
) -> tuple[np.ndarray, float]:
    """Best ``[log_c, t_1..t_m]`` over ``num_starts`` L-BFGS runs, and its Huber loss."""
    from scipy.optimize import minimize  # imported here: ~0.3 s that `import streammix` skips

    best, best_value = None, math.inf
    for start in initial_params(num_starts, mixtures.shape[1], own_domain, seed):
        result = minimize(
            huber_objective, start, args=(mixtures, targets, delta), jac=True,
            method="L-BFGS-B", options={"maxiter": max_iter, "gtol": 1e-12, "ftol": 1e-15},
        )
        value, params = float(result.fun), np.asarray(result.x, dtype=np.float64)
        if math.isfinite(value) and np.all(np.isfinite(params)) and value < best_value:
            best, best_value = params, value
    if best is None:
        raise RuntimeError("every start of the mixing-law fit diverged")
    return best, best_value


def fit_laws(
    mixtures: np.ndarray,
    losses: np.ndarray,
    *,
    num_starts: int = 64,
    delta: float = 0.02,
    max_iter: int = 500,
    seed: int = 0,
) -> LawFit:
    """One law per column of ``losses`` (``(P, n)``) over the rows of ``mixtures`` (``(P, m)``).

    Evaluation domain ``i`` is taken to be training domain ``i`` for the starting slopes when
    ``n == m``.
    """
    x = check_mixtures(mixtures, what="mixtures")
    y = np.asarray(losses, dtype=np.float64)
    if y.ndim != 2 or y.shape[0] != x.shape[0] or y.shape[1] < 1:
        raise ValueError(f"losses must have shape ({x.shape[0]}, n >= 1), got {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError("losses must be finite")
    if num_starts < 1 or max_iter < 1 or not (math.isfinite(delta) and delta > 0):
        raise ValueError(f"need num_starts >= 1, max_iter >= 1 and delta > 0, got "
                         f"{num_starts}, {max_iter}, {delta}")
    n, m = y.shape[1], x.shape[1]
    params, values = [], []
    for i in range(n):
        p, v = fit_one(x, y[:, i], own_domain=i if n == m else None, num_starts=num_starts,
                       delta=delta, max_iter=max_iter, seed=seed)
        params.append(p)
        values.append(v)
    params = np.array(params)
    return LawFit(log_c=params[:, 0].copy(), slopes=params[:, 1:].copy(), huber=np.array(values))


def check_mixtures(mixtures: np.ndarray, *, what: str) -> np.ndarray:
    """A float64 ``(P, m)`` copy whose rows are on the simplex (to 1e-6)."""
    x = np.array(mixtures, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{what} must be a 2-D array (proxies x domains), got shape {x.shape}")
    if not np.all(np.isfinite(x)) or np.any(x < 0):
        raise ValueError(f"{what} must be finite and >= 0")
    if np.any(np.abs(x.sum(axis=1) - 1.0) > 1e-6):
        raise ValueError(f"every row of {what} must sum to 1, got sums {x.sum(axis=1).tolist()}")
    return x


# ----------------------------------------------------------------------------- proposer


def check_target(target: np.ndarray | None, num_eval: int) -> np.ndarray | None:
    """``target`` as float64 weights summing to 1 over ``num_eval`` evaluation domains
    (``None`` stays ``None``: equal weights)."""
    if target is None:
        return None
    return check_weights(target, num_domains=num_eval, what="target weights")


def target_mean(values: np.ndarray, target: np.ndarray | None) -> float:
    """The target-weighted mean of per-evaluation-domain ``values`` (equal weights: the mean)."""
    return float(np.mean(values)) if target is None else float(target @ values)


def objective(x: np.ndarray, slopes: np.ndarray, prior: np.ndarray, kl_reg: float,
              target: np.ndarray | None = None) -> float:
    """``F(x) = sum_i w_i exp(t_i . x) + lambda KL(x || q)`` (inf off the support of q)."""
    x = np.asarray(x, dtype=np.float64)
    if np.any((x > 0) & (prior <= 0)):
        return math.inf
    pos = x > 0
    kl = float(np.sum(x[pos] * np.log(x[pos] / prior[pos])))
    return target_mean(np.exp(slopes @ x), check_target(target, slopes.shape[0])) + kl_reg * kl


def kkt_residual(x: np.ndarray, slopes: np.ndarray, prior: np.ndarray, kl_reg: float,
                 target: np.ndarray | None = None) -> float:
    """Spread ``max - min`` over the support of ``q`` of ``dF/dx_j``; 0 at the optimum.

    Also ``inf`` if ``x`` leaves the simplex's face spanned by the support of ``q`` or has a
    zero entry inside it (the optimum is interior to that face).
    """
    x = np.asarray(x, dtype=np.float64)
    support = prior > 0
    if abs(x.sum() - 1.0) > 1e-9 or np.any(x[~support] != 0) or np.any(x[support] <= 0):
        return math.inf
    w = check_target(target, slopes.shape[0])
    if w is None:
        g = slopes.T @ np.exp(slopes @ x) / slopes.shape[0]
    else:
        g = slopes.T @ (w * np.exp(slopes @ x))
    grad = g[support] + kl_reg * (np.log(x[support] / prior[support]) + 1.0)
    return float(grad.max() - grad.min())


def propose(
    slopes: np.ndarray, prior: np.ndarray, kl_reg: float = 0.05, *, tol: float = 1e-12,
    max_iter: int = 200, target: np.ndarray | None = None,
) -> np.ndarray:
    """``argmin_x sum_i w_i exp(t_i . x) + kl_reg KL(x || prior)`` over the simplex
    (``w = target``, normalized; equal weights ``1/n`` when ``None``)."""
    t = np.array(slopes, dtype=np.float64)
    q = np.array(prior, dtype=np.float64)
    if t.ndim != 2 or t.shape[0] < 1 or q.ndim != 1 or t.shape[1] != q.size:
        raise ValueError(f"slopes must be (n, m) and prior (m,), got {t.shape} and {q.shape}")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(q)) and np.all(q >= 0) and q.sum() > 0):
        raise ValueError("slopes must be finite and prior finite, >= 0 with a positive sum")
    if isinstance(kl_reg, bool) or not (kl_reg > 0):
        raise ValueError(f"kl_reg must be > 0 (inf returns the prior), got {kl_reg}")
    q = q / q.sum()
    if math.isinf(kl_reg):
        return q
    support = q > 0
    w = check_target(target, t.shape[0])
    if w is None:  # n * nu, as the reference's equal weights give it (bit for bit)
        inverse_w = np.full(t.shape[0], float(t.shape[0]))
    else:
        t, inverse_w = t[w > 0], 1.0 / w[w > 0]
    log_x = _solve_dual(t[:, support], q[support], inverse_w, float(kl_reg), tol, max_iter)
    x = np.zeros_like(q)
    x[support] = np.exp(log_x)
    return x / x.sum()


def _solve_dual(t: np.ndarray, q: np.ndarray, inverse_w: np.ndarray, lam: float, tol: float,
                max_iter: int) -> np.ndarray:
    """Damped Newton ascent on the dual ``D(nu)``; returns ``log x*`` on the support."""
    log_q = np.log(q)

    def evaluate(nu: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        s = t.T @ nu
        logits = log_q - s / lam
        lse = logsumexp(logits)
        value = float(np.sum(nu - nu * np.log(inverse_w * nu))) - _scaled_log_partition(s, q, lam)
        return value, logits - lse, t @ np.exp(logits - lse) - np.log(inverse_w * nu)

    nu = np.exp(np.minimum(t @ q, EXPONENT_CLIP)) / inverse_w
    value, log_x, grad = evaluate(nu)
    best, stalled = math.inf, 0
    for _ in range(max_iter):
        x = np.exp(log_x)
        u = t @ x
        neg_hessian = np.diag(1.0 / nu) + ((t * x) @ t.T - np.outer(u, u)) / lam
        step = np.linalg.solve(neg_hessian, grad)
        decrement = float(grad @ step)
        scale = max(1.0, float(np.max(np.abs(np.log(inverse_w * nu)))))
        if decrement <= (tol * scale) ** 2 or np.max(np.abs(grad)) <= tol * scale:
            return log_x
        alpha = 1.0
        while True:
            # The Newton step taken multiplicatively, nu * exp(alpha step / nu): the same
            # first-order change (so near the optimum it is Newton's step), and nu stays > 0
            # without shrinking alpha for the boundary.
            candidate = nu * np.exp(np.clip(alpha * step / nu, -EXPONENT_CLIP, EXPONENT_CLIP))
            new_value, new_log_x, new_grad = evaluate(candidate)
            ascent = new_value >= value + 1e-4 * alpha * decrement
            # Near the optimum the value changes by less than its rounding: judge by the gradient.
            closer = decrement < 1e-10 * (1.0 + abs(value)) and (
                np.max(np.abs(new_grad)) < (1.0 - 0.5 * alpha) * np.max(np.abs(grad)))
            if ascent or closer or alpha < 1e-12:
                break
            alpha *= 0.5
        if alpha < 1e-12:  # no more progress in floating point: the optimum is reached
            return log_x
        nu, value, log_x, grad = candidate, new_value, new_log_x, new_grad
        # With slopes of ~10 or more, x(nu) is so sensitive that the gradient stalls at
        # ~1e-9 instead of ~1e-16: stop there once it no longer improves.
        size = float(np.max(np.abs(grad)))
        if size < 0.5 * best:
            best, stalled = size, 0
        else:
            stalled += 1
            if stalled >= STALL_STEPS and size <= STALL_TOLERANCE * scale:
                return log_x
    if float(np.max(np.abs(grad))) <= STALL_TOLERANCE * scale:
        return log_x
    raise RuntimeError(f"the OP-Mix proposer did not converge in {max_iter} Newton steps "
                       f"(dual gradient {np.max(np.abs(grad)):.3g})")


def logsumexp(a: np.ndarray, b: np.ndarray | None = None) -> float:
    """``log sum_j b_j exp(a_j)`` (``b = 1`` by default), computed without overflow."""
    top = float(np.max(a))
    terms = np.exp(a - top) if b is None else b * np.exp(a - top)
    return top + math.log(float(np.sum(terms)))


def _scaled_log_partition(s: np.ndarray, q: np.ndarray, lam: float) -> float:
    """``lambda log sum_j q_j exp(-s_j / lambda)`` up to a constant, without cancellation.

    Written as ``-sbar + lambda log1p(sum_j q_j expm1(r_j))`` with ``sbar = q . s`` and
    ``r = (sbar - s) / lambda`` (exact because ``sum q = 1``), so that a large ``lambda``
    does not multiply the rounding error of the log-sum-exp; large ``r`` use logsumexp.
    """
    sbar = float(q @ s)
    r = (sbar - s) / lam
    if np.max(r) > 1.0:
        return -sbar + lam * logsumexp(r, b=q)
    return -sbar + lam * math.log1p(float(q @ np.expm1(r)))
