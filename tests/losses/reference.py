"""Independent float64 NumPy forms of the objectives, written loop-by-loop from docs/architecture.md."""

import numpy as np


def _lse(z):
    m = np.max(z)
    return m + np.log(np.sum(np.exp(z - m)))


def soft_q_terms(logits, targets, mask, segments, gamma, next_logits=None):
    """Per masked position: (Q, V, V') with V' = c_t V_{t+1}; next values read from `next_logits`."""
    next_logits = logits if next_logits is None else next_logits
    b_size, t_size, _ = logits.shape
    terms = []
    for b in range(b_size):
        for t in range(t_size):
            if mask[b, t] == 0:
                continue
            q = logits[b, t, targets[b, t]]
            v = _lse(logits[b, t])
            cont = t + 1 < t_size and mask[b, t + 1] > 0 and segments[b, t + 1] == segments[b, t]
            v_next = _lse(next_logits[b, t + 1]) if cont else 0.0
            terms.append((q, v, v_next))
    return np.array(terms, np.float64).reshape(-1, 3)


def iqlearn_unsimplified(logits, targets, mask, segments, *, gamma, lam, next_logits=None):
    """mean over expert tokens of -r + (V - gamma V') + lam r^2, r = Q - gamma V'."""
    q, v, v_next = soft_q_terms(logits, targets, mask, segments, gamma, next_logits).T
    r = q - gamma * v_next
    return np.mean(-r + (v - gamma * v_next) + lam * r**2)


def response_runs(mask, segments):
    """{(row, segment): [run, ...]}: each segment's runs of masked positions, in order, each a list."""
    runs = {}
    for b in range(mask.shape[0]):
        for t in range(mask.shape[1]):
            if mask[b, t] == 0:
                continue
            if t > 0 and mask[b, t - 1] > 0 and segments[b, t - 1] == segments[b, t]:
                runs[(b, segments[b, t])][-1].append(t)
            else:
                runs.setdefault((b, segments[b, t]), []).append([t])
    return runs


def episode_value_gaps(logits, targets, mask, segments, gamma):
    """Per episode, a segment's last response (its last run of masked positions; in a conversation,
    the last assistant turn): sum_t (V_t - gamma V'_t) over it."""
    t_size = logits.shape[1]
    sums = []
    for (b, _), runs in sorted(response_runs(mask, segments).items()):
        total = 0.0
        for t in runs[-1]:
            cont = t + 1 < t_size and mask[b, t + 1] > 0 and segments[b, t + 1] == segments[b, t]
            total += _lse(logits[b, t]) - gamma * (_lse(logits[b, t + 1]) if cont else 0.0)
        sums.append(total)
    return np.array(sums, np.float64)


def iqlearn_online(expert, policy, *, gamma, lam, alpha):
    """E_E[-log pi] + alpha (S_P[V - gV'] - S_E[V - gV']) + lam ((1-alpha) E_E[r^2] + alpha E_P[r^2]).

    E is a mean over response tokens, S a mean over episodes (`episode_value_gaps`) of the sum over
    each one's tokens.
    """
    qe, ve, ne = soft_q_terms(*expert, gamma).T
    qp, vp, npv = soft_q_terms(*policy, gamma).T
    re, rp = qe - gamma * ne, qp - gamma * npv
    value_term = np.mean(episode_value_gaps(*policy, gamma)) - np.mean(episode_value_gaps(*expert, gamma))
    return (
        np.mean(ve - qe) + alpha * value_term + lam * ((1 - alpha) * np.mean(re**2) + alpha * np.mean(rp**2))
    )


def mle(logits, targets, mask, *, label_smoothing=0.0, z_loss=0.0):
    total, count = 0.0, 0
    for b, t in zip(*np.nonzero(mask)):
        z = logits[b, t]
        v = _lse(z)
        nll = v - z[targets[b, t]]
        uniform = v - np.mean(z)
        total += (1 - label_smoothing) * nll + label_smoothing * uniform + z_loss * v**2
        count += 1
    return total / count


def numerical_grad(fn, x, eps=1e-6):
    """Central differences of a float64 scalar function."""
    x = np.array(x, np.float64)
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        orig = x[idx]
        x[idx] = orig + eps
        hi = fn(x)
        x[idx] = orig - eps
        lo = fn(x)
        x[idx] = orig
        grad[idx] = (hi - lo) / (2 * eps)
    return grad
