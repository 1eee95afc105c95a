"""GANTrainer: a plain Python object that trains one GAN run; knows nothing about Ray.

One G iteration (``train_step``) = ``optim.d_steps`` D updates, D's lazy update when one falls
due, one G update, G's lazy update when due, then the G EMA update (docs/methods.md section 7;
lazy updates: StyleGAN2's R1 and path length, ``tuneable_gan.lazy``). Each update runs the
terms of ``tuneable_gan.terms`` that its schedules select (adversarial loss, regularizer,
AdvAug, ADA, the gradient-gap probe); the step functions compute what the selected terms asked
for and nothing else, and hold no method-specific branch. Where the run is in its schedule
(dense, or the lottery-ticket rounds and then the ticket) is the phase's business
(``tuneable_gan.phases``, ``tuneable_gan.lottery``).

Every random draw of training (latents, labels, flips, DiffAugment, penalties) comes from one
seeded ``torch.Generator`` whose state is checkpointed together with the data sampler's position,
so a resumed run continues bitwise on CPU. The loop that drives a trainer is ``tuneable_gan.loop``.
"""

from __future__ import annotations

import copy
import functools
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tuneable_gan import trainer_state
from tuneable_gan.ada import ada_terms
from tuneable_gan.advaug import advaug_terms
from tuneable_gan.augment import diff_augment, parse_policy
from tuneable_gan.checkpoint import load_init_weights
from tuneable_gan.conditioning import build_conditioning, data_spec, instance_priors
from tuneable_gan.config import Config
from tuneable_gan.data import RealData, Sampler, load_data
from tuneable_gan.ema import ema_decay, update_ema
from tuneable_gan.errors import Diverged
from tuneable_gan.lazy import LazyBatch, LazyUpdate, lazy_ratio, lazy_step, lazy_updates
from tuneable_gan.losses import LOSSES
from tuneable_gan.lottery import LotteryPhase
from tuneable_gan.metrics import Evaluator
from tuneable_gan.models import build_models
from tuneable_gan.models.spectral import generate
from tuneable_gan.optim import LR_SCHEDULES, OPTIMIZERS, apply_hyperparameters
from tuneable_gan.phases import DensePhase
from tuneable_gan.precision import (
    PRECISIONS,
    images_to,
    indices_to,
    resolve_device,
    speed_settings,
    to_channels_last,
)
from tuneable_gan.regularizers import REGULARIZERS, Regularizer, input_grad_norms
from tuneable_gan.resolve import resolve
from tuneable_gan.sparsity import measured_sparsity
from tuneable_gan.terms import (
    DAdversarial,
    DBatch,
    GAdversarial,
    GBatch,
    GradientGapProbe,
    Term,
    adversarial_sum,
    total,
)
from tuneable_gan.tickets import TicketStore
from tuneable_gan.training_stats import StepStats

Tensor = torch.Tensor


class GANTrainer:
    """Trains G and D for one validated config; ``state_dict``/``load_state_dict`` for resume.

    ``cfg`` is the resolved config (``tuneable_gan.resolve``: paper defaults filled in).
    ``step`` is the one step counter the loop, the logs and the reports use (``phase.offset +
    phase.step``: 1 .. train.steps in the final phase, negative during lottery stage I);
    ``phase.step`` counts G steps within the current phase.
    """

    def __init__(self, cfg: Config, device: str | torch.device | None = None,
                 tickets: TicketStore | str | Path | None = None) -> None:
        """``tickets``: the store lottery tickets are shared through (a root directory or a
        TicketStore; default ``tickets.default_root()``); unused when ``sparsity.level`` is 0."""
        self.device = torch.device(device) if device is not None else resolve_device(
            cfg.train.device)
        self.data: RealData = load_data(cfg.data, "train")
        # The priors come from the clean training images, once, before anything trains.
        priors = instance_priors(cfg, self.data, self.device)
        self.spec = data_spec(self.data, priors)
        self.cfg = cfg = resolve(cfg, self.spec)
        torch.manual_seed(cfg.train.seed)
        G, D = build_models(cfg.model, self.spec)
        if cfg.model.init_from:
            G_init = load_init_weights(cfg.model.init_from, cfg.model.arch, G, D)
        self._rng0 = torch.get_rng_state()  # every phase restarts the global RNG from here
        self.G, self.D = G.to(self.device), D.to(self.device)
        to_channels_last((self.G, self.D), self.device)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        if cfg.model.init_from and G_init is not None:
            self.G_ema.load_state_dict(G_init)
        # The contexts of a G iteration and of its forwards and losses (evaluation runs outside
        # both: fp32, torch's defaults).
        self.speed = functools.partial(speed_settings, self.device)
        self.autocast = functools.partial(PRECISIONS.get(cfg.train.precision), self.device)
        self.cond = build_conditioning(cfg, self.data, priors, self.device)
        self.conditional = self.cond.kind != "none"
        self.loss = LOSSES.get(cfg.loss.name)
        self.policy = parse_policy(cfg.augment.diffaugment)
        self.images = images_to(self.data.images, self.device)
        self.gen = torch.Generator(self.device).manual_seed(cfg.train.seed)
        # Noise inputs (stylegan2) draw from the run's stream in training and from a stream of
        # their own, reseeded with the latents' seed, in evaluation: same weights, same numbers.
        self.G.noise_generator = self.gen
        self.G_ema.noise_generator = torch.Generator(self.device)
        self.stats = StepStats()
        # Which G iterations are read (``train_step``): all of them (a sink that averages every
        # step's values, as ``TuneSink`` does), or only those that end at a log or eval step.
        self.record_every_step = True
        self._recording = True
        self._evaluator: Evaluator | None = None
        self._fresh_state()
        self.phase = LotteryPhase(self, tickets) if cfg.sparsity.level > 0 else DensePhase(self)

    def _fresh_state(self) -> None:
        """Optimizers, terms, sampler and counters as at the start of a phase."""
        cfg = self.cfg
        self.opt_g = self._optimizer(self.G, cfg.optim.g_lr)
        self.opt_d = self._optimizer(self.D, cfg.optim.d_lr)
        self.reg: Regularizer = REGULARIZERS.get(cfg.regularizer.name)(cfg)
        adv_d, adv_g = advaug_terms(cfg.augment)
        # Order is evaluation order: the plain loss before AdvAug (their RNG draws), the
        # regularizer after both (DigGAN/LeCam read the clean logits), the probe anywhere.
        # ADA observes the logits of every D step (its p follows them) and is T itself.
        self.ada = ada_terms(cfg.augment, cfg.optim.batch_size * cfg.optim.d_steps, self.device)
        self.d_terms: list[Term] = [DAdversarial(), *adv_d, GradientGapProbe(), self.reg,
                                    *self.ada]
        self.g_terms: list[Term] = [GAdversarial(), *adv_g]
        # StyleGAN2's lazy R1 and path-length penalties: updates of their own (tuneable_gan.lazy).
        self.lazy_d, self.lazy_g = lazy_updates(cfg.loss)
        self._last_reals: tuple[Tensor, Tensor | None] | None = None
        self.sampler = Sampler(len(self.data), cfg.optim.batch_size, cfg.train.seed)
        self.images_seen = 0
        self.best: dict[str, Any] = {}
        self._sparsity = measured_sparsity(self.G)  # pruned weights stay 0 within a phase

    def _optimizer(self, net: nn.Module, lr: float) -> torch.optim.Optimizer:
        o = self.cfg.optim
        return OPTIMIZERS.get(o.name)(net.parameters(), lr, o, self.device.type == "cuda")

    def restart_phase(self, G_state: dict[str, Tensor], D_state: dict[str, Tensor]) -> None:
        """``PhaseHost.restart_phase``: G <- G_state with the phase's masks, D <- D_state,
        G_ema <- G, and everything else as after construction."""
        self.G.load_state_dict(G_state)
        self.phase.constrain_weights(self.G)
        self.D.load_state_dict(D_state)
        self.G_ema.load_state_dict(self.G.state_dict())
        self.gen.manual_seed(self.cfg.train.seed)
        torch.set_rng_state(self._rng0)
        self._fresh_state()

    # -- sampling -------------------------------------------------------------------------------

    def _fake_labels(self, n: int) -> Tensor | None:
        return self.cond.train_fakes(n, self.gen)

    def _real_batch(self) -> tuple[Tensor, Tensor | None]:
        idx = indices_to(self.sampler.next(), self.device)
        x, flip = self.images[idx], None
        if self.cfg.data.flip:
            flip = torch.rand(x.shape[0], generator=self.gen, device=self.device) < 0.5
            x = torch.where(flip.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)
        return x, self.cond.real(idx, flip)

    def augment(self, x: Tensor) -> Tensor:
        """T with the trainer's generator: DiffAugment (``augment.diffaugment``), then ADA at
        its current p (``augment.ada``), the order of DiffAugment's StyleGAN2 port; the
        identity when both are off."""
        x = diff_augment(x, self.policy, self.gen) if self.policy else x
        for t in self.ada:
            x = t.augment(x, self.gen)
        return x

    # -- one iteration --------------------------------------------------------------------------

    def _active(self, terms: list[Term], d_step: int) -> list[Term]:
        # A probe only records values: in an iteration nobody reads it costs nothing.
        return [t for t in terms if t.fires(self.phase.step, d_step, self.phase.stage)
                and (self._recording or t.group != "probe")]

    def d_step(self, d_step: int) -> None:
        """One D update on fakes (first) and reals concatenated, as in the DigGAN reference,
        running the D terms whose schedules fire; records ``d_loss``, and ``reg_loss`` on the D
        steps whose penalty fires. Forwards and losses run in ``train.precision``."""
        with self.autocast():
            d_loss, reg_loss = self._d_losses(d_step)
        loss = d_loss + reg_loss if reg_loss is not None else d_loss
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        self.images_seen += self.cfg.optim.batch_size
        self.stats.report("d_loss", d_loss)
        if reg_loss is not None:  # the penalty of the D steps that carry it, not diluted
            self.stats.report("reg_loss", reg_loss)

    def _observe_real(self, logits: Tensor) -> None:
        for t in self.d_terms:
            t.observe_real(logits)

    def _lazy_update(self, updates: list[LazyUpdate], net: nn.Module,
                     opt: torch.optim.Optimizer) -> None:
        """The lazy updates of ``net`` that fire this iteration, as one update of their own
        (``tuneable_gan.lazy``); G's goes through the phase's masks as its main update does."""
        active = [u for u in updates if u.fires(self.phase.step, 0, self.phase.stage)]
        if not active:
            return
        assert self._last_reals is not None, "a lazy update runs after the D steps"
        batch = LazyBatch(G=self.G, D=self.D, augment=self.augment, generator=self.gen,
                          reals=self._last_reals[0], real_labels=self._last_reals[1],
                          fake_labels=self._fake_labels, batch_size=self.cfg.optim.batch_size,
                          step=self.phase.step, observe_real=self._observe_real)
        masks = self.phase if net is self.G else None
        lazy_step(active, batch, net, opt, self.autocast, self.stats, masks)

    def _d_losses(self, d_step: int) -> tuple[Tensor, Tensor | None]:
        """(adversarial D loss, summed penalty or None) of one D step, with their graph."""
        B = self.cfg.optim.batch_size
        active = self._active(self.d_terms, d_step)
        x_r, y_r = self._real_batch()
        y_f = self._fake_labels(B)
        for t in active:
            y_f = t.fake_labels(y_r, y_f)
        z = self.G.sample_z(B, self.gen, self.device)
        with torch.no_grad():
            x_f = self.G.rest(self.G.train_stem(z, y_f, self.gen), y_f)
        self._last_reals = (x_r, y_r)
        graph = any(t.needs_grad_norms for t in active)
        want_norms = graph or any(t.reads_grad_norms for t in active)
        raw = None
        if any(t.needs_raw_grad for t in active):
            # Differentiate w.r.t. the un-augmented images through this same forward (StudioGAN's
            # R1): T then runs on a leaf that requires grad, and x stays in its graph.
            raw = torch.cat([x_f, x_r]).requires_grad_(True)
            x = self.augment(raw)
        else:
            x = self.augment(torch.cat([x_f, x_r]))
        if want_norms and raw is None:
            x = x.detach().requires_grad_(True)
        y = torch.cat([y_f, y_r]) if self.conditional else None
        # One trunk pass feeds every term that reads D's features (AdvAug's two branches).
        h = self.D.trunk(x) if any(t.needs_features for t in active) else None
        logits = self.D.head(h, y) if h is not None else self.D(x, y)
        batch = DBatch(x=x, logits=logits, labels=y, n_fake=B, grad_norms=None, fake_raw=x_f,
                       real_raw=x_r, D=self.D, augment=self.augment, generator=self.gen,
                       step=self.phase.step, d_step=d_step, features=h, loss=self.loss,
                       raw=raw)
        d_loss = adversarial_sum([t for t in active if t.group == "adversarial"], batch,
                                 self.stats)
        if want_norms:
            batch.grad_norms = input_grad_norms(logits, x, create_graph=graph)
        for t in self.d_terms:
            t.observe(batch, self.stats)
        for t in active:
            if t.group == "probe":
                t.loss(batch, self.stats)
        penalties = [t.loss(batch, self.stats) for t in active if t.group == "penalty"]
        return d_loss, (total(penalties) if penalties else None)

    def g_step(self) -> None:
        """One G update on ``optim.g_batch_size`` fakes through T and a frozen D, then the G EMA
        update; the phase's masks constrain G's gradients, weights and the EMA. Records
        ``g_loss``. Forwards and losses run in ``train.precision``."""
        B = self.cfg.optim.g_batch_size
        active = self._active(self.g_terms, 0)
        y_f = self._fake_labels(B)
        z = self.G.sample_z(B, self.gen, self.device)
        self.D.requires_grad_(False)  # D's parameter grads are not needed for G's update
        try:
            with self.autocast():
                u = self.G.train_stem(z, y_f, self.gen)
                x_f = self.G.rest(u, y_f)
                batch = GBatch(z=z, labels=y_f, stem=u, fake=x_f, G=self.G, D=self.D,
                               augment=self.augment, loss=self.loss, step=self.phase.step)
                g_loss = adversarial_sum([t for t in active if t.group == "adversarial"],
                                         batch, self.stats)
                penalties = [t.loss(batch, self.stats) for t in active if t.group == "penalty"]
                loss = g_loss + total(penalties) if penalties else g_loss
            self.opt_g.zero_grad(set_to_none=True)
            loss.backward()
        finally:
            self.D.requires_grad_(True)
        self.phase.constrain_grads(self.G)
        self.opt_g.step()
        self.phase.constrain_weights(self.G)
        self._lazy_update(self.lazy_g, self.G, self.opt_g)
        for t in self.d_terms:  # after every update of the iteration (ADA's p)
            t.end_iteration()
        o = self.cfg.optim
        nimg = self.images_seen - o.d_steps * o.batch_size  # shown before this iteration
        update_ema(self.G_ema, self.G, ema_decay(o, self.phase.step, nimg),
                   buffers=o.g_ema_buffers)
        self.phase.constrain_weights(self.G_ema)
        self.stats.report("g_loss", g_loss)

    def train_step(self, record: bool | None = None) -> dict[str, float]:
        """One G iteration; returns the means of what its terms recorded, plus ``step``,
        ``images_seen`` and ``sparsity``. Raises Diverged on a NaN/inf value.

        ``record``: whether the iteration is read (None: every one if ``record_every_step``,
        else those that end at a log or eval step or a phase's end). An unread iteration runs
        no probe, reads nothing from the device and returns only those three counts; a NaN/inf
        in it is raised at the next read one (docs/design.md). The phase may first end a
        lottery round and wait for or adopt a ticket (``tuneable_gan.lottery``).
        """
        self.phase.before_step()
        tc, nxt = self.cfg.train, self.phase.step + 1  # the phase step this iteration ends
        self._recording = record if record is not None else self.record_every_step or any(
            self._boundary(nxt, every) for every in (tc.log_every, tc.eval_every))
        self._apply_optim_config()
        try:
            with self.speed():
                for k in range(self.cfg.optim.d_steps):
                    self.d_step(k)
                self._lazy_update(self.lazy_d, self.D, self.opt_d)
                self.g_step()
        except BaseException:
            self.stats.clear()
            raise
        metrics = self.stats.collect() if self._recording else {}
        if not self._recording:
            self.stats.discard()
        self.phase.advance()
        bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
        if self._recording and not bad and not self.stats.unread_finite:
            bad = {"unread_nonfinite": math.nan}  # in an unread iteration since the last read
        if bad:
            raise Diverged(self.step, bad)
        return metrics | {"step": self.step, "images_seen": self.images_seen,
                          "sparsity": self._sparsity}

    # -- progress -------------------------------------------------------------------------------

    @property
    def step(self) -> int:
        """The run's reported step: ``phase.offset + phase.step``."""
        return self.phase.offset + self.phase.step

    @property
    def finished(self) -> bool:
        """The final phase has run ``train.steps``."""
        return self.phase.done

    def at_boundary(self, every: int) -> bool:
        """The last step ended a phase or a multiple of ``every`` within it (eval, log and
        checkpoint cadence: per round in lottery stage I, per step otherwise)."""
        return self._boundary(self.phase.step, every)

    def _boundary(self, phase_step: int, every: int) -> bool:
        return phase_step % every == 0 or phase_step >= self.phase.length

    def sparsity(self) -> float:
        """Measured sparsity of G's conv weights (exact zeros / all)."""
        return measured_sparsity(self.G)

    def close(self) -> None:
        """Release what the phase holds (a ticket lock: a trial that stops mid-round must not
        keep it)."""
        self.phase.close()

    # -- evaluation -----------------------------------------------------------------------------

    @property
    def evaluator(self) -> Evaluator:
        """The run's Evaluator, built on first use (it may train or load an extractor)."""
        if self._evaluator is None:
            self._evaluator = Evaluator(self.cfg.eval, self.cfg.data, self.device,
                                        conditions=self.cond)
        return self._evaluator

    def evaluate(self) -> dict[str, Any]:
        """Metrics of G_ema (fixed latent seed: same weights, same numbers), plus the best so far.

        The best is tracked on ``fid`` (``w1`` for the 1-D toy), lower is better, and stored in the
        checkpoint; ``<metric>_best`` and ``best_step`` are added to the result. Before the final
        phase (lottery stage I) the metrics are named ``ticket_<metric>`` and the best is not
        touched: nothing named ``fid`` ever describes a network other than the ticket.
        """
        self.G_ema.noise_generator.manual_seed(self.cfg.eval.seed)
        m = dict(self.evaluator(self.G_ema))
        prefix = self.phase.metric_prefix
        if prefix:
            return {(k if k == "eval_protocol" else f"{prefix}{k}"): v for k, v in m.items()}
        key = "fid" if "fid" in m else "w1"
        value = float(m[key])
        if not self.best or value < self.best["value"]:
            self.best = {"metric": key, "value": value, "step": self.step}
        m[f"{key}_best"] = self.best["value"]
        m["best_step"] = self.best["step"]
        return m

    # -- samples and state ----------------------------------------------------------------------

    def samples(self, n: int, seed: int = 0, ema: bool = True) -> Tensor:
        """``n`` samples from G_ema (or G) with a fixed latent seed, on the CPU, generated as the
        evaluation generates (``eval.g_mode``, exact spectral norm; the nets' state untouched)."""
        G = self.G_ema if ema else self.G
        gen = torch.Generator(self.device).manual_seed(seed)
        if ema:
            G.noise_generator.manual_seed(seed)
        z = G.sample_z(n, gen, self.device)
        # Its own CPU stream: a prior grid's draws are the same on any device.
        y = self.cond.grid(n, torch.Generator().manual_seed(seed))
        return generate(G, z, y, mode=self.cfg.eval.g_mode, batch_size=self.cfg.eval.g_batch_size)

    def _apply_optim_config(self) -> None:
        o = self.cfg.optim
        apply_hyperparameters([(self.opt_g, o.g_lr, lazy_ratio(self.lazy_g)),
                               (self.opt_d, o.d_lr, lazy_ratio(self.lazy_d))], o,
                              LR_SCHEDULES[o.lr_schedule](self.phase.step, self.phase.length))

    def fold_rng(self, salt: int) -> None:
        """Re-seed the training streams from their state and ``salt`` (< 2**63): a PBT clone
        continues its donor's run on streams of its own instead of replaying the donor's."""
        trainer_state.fold_rng(self.gen, salt)

    def _all_terms(self) -> list[Term]:
        return [*self.d_terms, *self.g_terms, *self.lazy_d, *self.lazy_g]

    def state_dict(self) -> dict[str, Any]:
        """Everything an identical continuation needs (tensors and plain containers only)."""
        return trainer_state.state_of(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()`` (from this or a bitwise-identical config).

        The state is checked against this run's own first, so a checkpoint with a missing key
        or a tensor of another shape is one ``CheckpointError`` naming the first bad key (its
        expected and found shape) and leaves the trainer untouched."""
        trainer_state.load_into(self, state)
        self._apply_optim_config()  # hyperparameters come from this run's config
        self._sparsity = measured_sparsity(self.G)
