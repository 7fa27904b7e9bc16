"""The jitted train and eval steps, generic over the objective `(stats, batch[, policy]) -> (loss, metrics)`.

The step reads two named streams: the expert batch, always, and the policy batch (the model's own
samples) when the objective is online. The model's forward pass gives the objective each stream's
per-position TokenStats (`jirl.forward`): from the full logits (vocab_chunk = 0) or from the hidden
states in vocabulary chunks.

On one device or sharded over a mesh (jirl.sharding), with optional gradient accumulation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jirl import forward, losses, sharding
from jirl.errors import ConfigError
from jirl.models import layers
from jirl.optimizer import nonfinite_counts
from jirl.train.state import TrainState

if TYPE_CHECKING:  # a type only: the step needs none of what building a Run imports
    from jirl.experiment import Run


def _split_microbatches(x: jax.Array, microbatches: int) -> jax.Array:
    """[B, ...] -> [M, B/M, ...], microbatch i = rows i, i + M, i + 2M, ... (strided, so that each
    microbatch spreads over all data-parallel devices as the batch does)."""
    b = x.shape[0]
    return x.reshape(b // microbatches, microbatches, *x.shape[1:]).swapaxes(0, 1)


def _is_count(key: str) -> bool:
    return key == "tokens" or key.endswith("_tokens")


def _loss_fn(graphdef: nnx.GraphDef, objective: Callable, head: forward.HeadOptions) -> Callable:
    """(params, expert, policy | None[, adapters[, policy_adapters]]) -> (loss, metrics): each stream
    through the head, then the objective. `adapters` (`layers.Adapters`): LoRA on the frozen `params`;
    `policy_adapters`, the policy stream's (the same adapters with their own dropout key), else `adapters`."""
    mean_logit = bool(getattr(objective, "needs_mean_logit", False))
    expected_logit = bool(getattr(objective, "needs_expected_logit", False))

    def stream(params, batch, adapters) -> losses.Stream:
        stats = forward.token_stats(
            graphdef,
            params,
            batch,
            head,
            mean_logit=mean_logit,
            expected_logit=expected_logit,
            adapters=adapters,
        )
        return losses.Stream(stats, batch)

    def loss_of(params, expert, policy, adapters=None, policy_adapters=None):
        if policy is None:
            return objective(*stream(params, expert, adapters))
        policy_stream = stream(params, policy, adapters if policy_adapters is None else policy_adapters)
        return objective(*stream(params, expert, adapters), policy=policy_stream)

    return loss_of


def _lora_loss_fn(loss_of: Callable, lora: Any, base: Any, key: jax.Array) -> Callable:
    """(adapters, expert, policy) -> (loss, metrics): the model is the frozen `base` with the adapters
    (the only argument differentiated); `key` draws the adapters' dropout, fold_in(key, 0) on the
    expert stream and fold_in(key, 1) on the policy's, so that their masks are independent."""

    def with_dropout(adapters, stream: int):
        key_or_none = jax.random.fold_in(key, stream) if lora.dropout > 0 else None
        return layers.Adapters(adapters["layers"], lora.scale, lora.dropout, key_or_none)

    def loss_of_adapters(adapters, expert, policy):
        return loss_of(base, expert, policy, with_dropout(adapters, 0), with_dropout(adapters, 1))

    return loss_of_adapters


class TrainStep:
    """`step(state, expert, policy=None) -> (state, metrics)`: the jitted step with the policy stream
    optional; `step.lower(state, expert, policy=None)` lowers it (ahead-of-time compilation).

    A LoRA step (`lora=` given to `make_train_step`) also reads the frozen base: `step.base`, set
    with `with_base(base)` (or given to `lower` as `base=`, abstract arrays when planning)."""

    def __init__(self, jitted: Callable, lora: Any = None):
        self._jitted, self.lora, self.base = jitted, lora, None

    def with_base(self, base: Any) -> TrainStep:
        self.base = base
        return self

    def __call__(self, state: TrainState, expert: Mapping[str, Any], policy: Mapping[str, Any] | None = None):
        if self.lora is None:
            return self._jitted(state, expert, policy)
        if self.base is None:
            raise ValueError("a LoRA train step needs its frozen base: step.with_base(base) first.")
        return self._jitted(state, expert, policy, self.base)

    def lower(self, state: Any, expert: Any, policy: Any = None, base: Any = None):
        if self.lora is None:
            return self._jitted.lower(state, expert, policy)
        return self._jitted.lower(state, expert, policy, self.base if base is None else base)


def _accumulate(
    loss_and_grads: Callable,
    params: Any,
    streams: tuple,
    microbatches: int,
    micro_sharding: Any,
    reads_counts: bool,
):
    """(loss, metrics, grads) accumulated over M strided slices of the streams' rows (see
    make_train_step), `loss_and_grads(params, slice, i)` on slice i; `micro_sharding`: the
    [M, B/M, ...] slices' sharding, or None. `reads_counts`: the objective divides by the whole
    batch's counts each slice carries (summed), else the slices are weighted by their expert tokens."""
    for stream in (s for s in streams if s is not None):
        b = jax.tree.leaves(stream)[0].shape[0]
        if b % microbatches:
            raise ConfigError(
                f"the batch size {b} is not divisible by train.microbatches={microbatches}; "
                "microbatches must divide train.batch_size."
            )
    micro = jax.tree.map(lambda x: _split_microbatches(x, microbatches), streams)
    if micro_sharding is not None:
        micro = jax.lax.with_sharding_constraint(micro, micro_sharding)
    if not reads_counts:
        return _weigh_slices(loss_and_grads, params, micro, microbatches)
    counts = tuple(None if s is None else losses.batch_counts(s) for s in streams)  # whole-batch counts

    def slice_loss_and_grads(params, mb, slice_index):
        mb = tuple(None if s is None else dict(s, **n) for s, n in zip(mb, counts))
        return loss_and_grads(params, mb, slice_index)

    return _sum_slices(slice_loss_and_grads, params, micro)


def _ignoring_slice(loss_and_grads: Callable) -> Callable:
    """`loss_and_grads(params, streams, slice_index)` of a step that draws nothing per microbatch."""
    return lambda params, streams, slice_index=None: loss_and_grads(params, streams)


def _zeros(loss_and_grads: Callable, params: Any, micro: tuple) -> tuple:
    """Zero (loss, metrics, grads), the scan's starting sums."""
    first = jax.tree.map(lambda x: x[0], micro)
    _, metrics_shape, _ = jax.eval_shape(loss_and_grads, params, first, jnp.zeros((), jnp.int32))
    metrics = {k: jnp.zeros(v.shape, v.dtype) for k, v in metrics_shape.items()}
    return jnp.zeros((), jnp.float32), metrics, jax.tree.map(jnp.zeros_like, params)


def _indexed(micro: tuple) -> tuple:
    """(slice indices [M], slices [M, ...]): what the accumulating scans run over."""
    return jnp.arange(jax.tree.leaves(micro)[0].shape[0], dtype=jnp.int32), micro


def _sum_slices(loss_and_grads: Callable, params: Any, micro: tuple):
    """Each slice's loss and means divide by the whole batch's counts: they add up (counts too)."""

    def body(carry, indexed_slice):
        slice_index, mb = indexed_slice
        return jax.tree.map(jnp.add, carry, loss_and_grads(params, mb, slice_index)), None

    return jax.lax.scan(body, _zeros(loss_and_grads, params, micro), _indexed(micro))[0]


def _weigh_slices(loss_and_grads: Callable, params: Any, micro: tuple, microbatches: int):
    """An objective of token means over its own batch: slice i weighted by its N_i = metrics["tokens"]."""
    zeros = _zeros(loss_and_grads, params, micro)
    if "tokens" not in zeros[1]:
        raise ConfigError(
            f"train.microbatches={microbatches} needs the loss to report metrics['tokens'] "
            "(its mask sum) to weight the slices; use microbatches=1 for this loss."
        )

    def body(carry, indexed_slice):
        loss_sum, metric_sums, grad_sums = carry
        slice_index, mb = indexed_slice
        loss, metrics, grads = loss_and_grads(params, mb, slice_index)
        n = metrics["tokens"].astype(jnp.float32)
        grad_sums = jax.tree.map(lambda s, g: s + n * g, grad_sums, grads)
        metric_sums = {k: metric_sums[k] + (v if _is_count(k) else n * v) for k, v in metrics.items()}
        return (loss_sum + n * loss, metric_sums, grad_sums), None

    (loss_sum, metric_sums, grad_sums), _ = jax.lax.scan(body, zeros, _indexed(micro))
    inv_n = 1.0 / jnp.maximum(metric_sums["tokens"].astype(jnp.float32), 1.0)
    metrics = {k: v if _is_count(k) else v * inv_n for k, v in metric_sums.items()}
    grads = jax.tree.map(lambda g: g * inv_n, grad_sums)
    return loss_sum * inv_n, metrics, grads


def make_train_step(
    graphdef: nnx.GraphDef,
    objective: Callable,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    *,
    head: forward.HeadOptions = forward.DEFAULT_HEAD,
    microbatches: int = 1,
    mesh: jax.sharding.Mesh | None = None,
    state_shardings: Any = None,
    rules: Mapping[str, Any] | None = None,
    lora: Any = None,
    base_shardings: Any = None,
    seed: int = 0,
) -> TrainStep:
    """A jitted `(state, expert, policy=None) -> (state, metrics)`; the state is donated.

    lora (`jirl.models.lora.LoraConfig`): state.params are the LoRA adapters alone (and the optimizer
    state theirs); the step also reads the frozen base params (`TrainStep.with_base`, placed by
    `base_shardings`), which are neither differentiated nor updated. The adapters' dropout at step s
    draws with k_s = fold_in(key(seed), s), so a resumed run draws what the uninterrupted one did,
    and microbatch i of a step with M > 1 with fold_in(k_s, i), so that each slice has its own masks.

    expert: the demonstrations' batch; policy: a batch of the model's own samples, which an online
    objective (`objective.needs_policy`) reads and every other objective refuses.

    head: how the objective's statistics are computed (jirl.forward.HeadOptions): from the full
    logits (vocab_chunk=0), or in vocabulary chunks from the hidden states.

    microbatches = M > 1 accumulates gradients over M strided slices of the rows of both streams
    (the policy batch sampled once for the whole batch), with 1/M of the activations. Every mean
    of the objectives is sum / count, with its own count (expert tokens, policy tokens, expert and
    policy episodes: online IQLearn has all four), and the counts read the masks alone. So the step
    first takes the whole batch's counts (`losses.batch_counts`) and gives them to every slice; each
    slice's mean divides its sum by them, L = sum_i L_i, grad L = sum_i grad L_i, every mean metric
    is the sum of the slices' and every count (`tokens`, `*_tokens`) the sum of theirs: the M = 1
    step up to float rounding. An objective without `reads_counts` (a plain token mean over its
    own batch) has slice i weighted by its N_i = metrics["tokens"] instead: L = sum_i N_i L_i / N,
    exact for a single expert-token mean; it cannot be online.

    With `mesh` and `state_shardings` (from `create_sharded_train_state`), the step is one jit with
    those in/out shardings, the batch split over the data axes (`jirl.sharding.batch_sharding`),
    replicated metrics, and activation sharding constraints at block boundaries.
    """
    if not isinstance(microbatches, int) or microbatches < 1:
        raise ValueError(f"train.microbatches={microbatches!r} must be a positive integer.")
    if (mesh is None) != (state_shardings is None):
        raise ValueError("make_train_step needs both mesh= and state_shardings=, or neither.")
    constrain_fn = None if mesh is None else sharding.activation_constrainer(mesh, rules)
    grad_shardings = None if mesh is None else state_shardings.params
    batch_sharding = None if mesh is None else sharding.batch_sharding(mesh, rules)
    loss_of = _loss_fn(graphdef, objective, head)
    needs_policy = bool(getattr(objective, "needs_policy", False))
    reads_counts = bool(getattr(objective, "reads_counts", False))
    if needs_policy and microbatches > 1 and not reads_counts:  # expert-token weights miss the policy's
        raise ConfigError(
            f"an online objective that does not read the batch's counts (objective.reads_counts) does not "
            f"combine with train.microbatches={microbatches}; set one of them off."
        )

    def _micro_sharding(streams):
        """The slices split over the data axes as the batch is, when each slice divides over them."""
        b = jax.tree.leaves(streams[0])[0].shape[0]
        if mesh is None or b % microbatches or (b // microbatches) % sharding.data_parallel_size(mesh, rules):
            return None
        return jax.NamedSharding(mesh, jax.sharding.PartitionSpec(None, *batch_sharding.spec))

    def gradients_of(loss_fn):
        def loss_and_grads(params, streams):
            (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, *streams)
            if grad_shardings is not None:
                grads = jax.lax.with_sharding_constraint(grads, grad_shardings)
            return loss, metrics, grads

        return loss_and_grads

    def train_step(
        state: TrainState,
        expert: Mapping[str, jax.Array],
        policy: Mapping[str, jax.Array] | None,
        base: Any = None,
    ):
        if needs_policy != (policy is not None):
            raise ValueError(
                f"the objective {'reads' if needs_policy else 'reads no'} policy batch, but the step was "
                f"{'not ' if policy is None else ''}given one; online objectives (loss.alpha > 0) take "
                "step(state, expert, policy), offline ones step(state, expert)."
            )
        streams = (expert, policy)
        if lora is None:
            loss_and_grads = _ignoring_slice(gradients_of(loss_of))
        else:
            step_key = jax.random.fold_in(jax.random.key(seed), state.step)

            def loss_and_grads(params, streams, slice_index=None):
                """Microbatch i draws its adapters' dropout with fold_in(step_key, i): its own masks."""
                key = step_key if slice_index is None else jax.random.fold_in(step_key, slice_index)
                return gradients_of(_lora_loss_fn(loss_of, lora, base, key))(params, streams)

        with layers.activation_sharding(constrain_fn):
            if microbatches == 1:
                loss, metrics, grads = loss_and_grads(state.params, streams)
            else:
                loss, metrics, grads = _accumulate(
                    loss_and_grads,
                    state.params,
                    streams,
                    microbatches,
                    _micro_sharding(streams),
                    reads_counts,
                )
        grad_norm = optax.global_norm(grads)
        # A non-finite loss or gradient norm (|g|^2 overflows, as Adam's second moment would) makes
        # every gradient NaN, so that the optimizer skips the step whole (jirl.optimizer).
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        grads = jax.tree.map(lambda g: jnp.where(finite, g, jnp.nan), grads)
        applied_before = state.step - nonfinite_counts(state.opt_state).get("nonfinite_steps", 0)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(
            metrics,
            loss=loss,
            grad_norm=grad_norm,
            learning_rate=schedule(applied_before),  # the optimizer's count: skipped steps do not move it
            **nonfinite_counts(opt_state),
        )
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    if lora is None:
        step_fn = lambda state, expert, policy: train_step(state, expert, policy)  # noqa: E731
    else:
        step_fn = train_step
    if mesh is None:
        return TrainStep(jax.jit(step_fn, donate_argnums=0), lora)
    in_shardings = (state_shardings, batch_sharding, batch_sharding)
    if lora is not None:
        in_shardings += (base_shardings,)
    return TrainStep(
        jax.jit(
            step_fn,
            in_shardings=in_shardings,
            out_shardings=(state_shardings, sharding.replicated(mesh)),
            donate_argnums=0,
        ),
        lora,
    )


def run_train_step(
    run: Run, graphdef: nnx.GraphDef, state_shardings: TrainState, base_shardings: Any = None
) -> TrainStep:
    """The sharded train step a Run describes: its objective, optimizer, head, microbatches, mesh, rules
    (and with LoRA, `run.lora` over a frozen base placed by `base_shardings`)."""
    return make_train_step(
        graphdef,
        run.objective,
        run.tx,
        run.schedule,
        head=run.head,
        microbatches=run.microbatches,
        mesh=run.mesh,
        state_shardings=state_shardings,
        rules=run.rules,
        lora=run.lora,
        base_shardings=base_shardings,
        seed=int(run.config.train.seed),
    )


def make_eval_step(
    graphdef: nnx.GraphDef, objective: Callable, *, head: forward.HeadOptions = forward.DEFAULT_HEAD
) -> Callable:
    """A jitted `(params, expert) -> metrics` (the loss's metrics on the expert stream, no update).

    An online objective is evaluated on the expert stream alone, with its offline terms (alpha = 0).
    """
    if getattr(objective, "needs_policy", False):
        objective = objective.offline()
    loss_of = _loss_fn(graphdef, objective, head)

    def eval_step(params: Any, expert: Mapping[str, jax.Array]):
        loss, metrics = loss_of(params, expert, None)
        return dict(metrics, loss=loss)

    return jax.jit(eval_step)
