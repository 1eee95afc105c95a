"""GANTrainer: a plain Python object that trains one GAN run; knows nothing about Ray.

One G iteration (``train_step``) = ``optim.d_steps`` D steps, then one G step, then the G EMA
update (METHODS.md section 7). Every random draw of training (latents, labels, flips, DiffAugment)
comes from one seeded ``torch.Generator`` whose state is checkpointed together with the data
sampler's position, so a resumed run continues bitwise on CPU.

With ``sparsity.level > 0`` the same ``train_step`` first runs the ticket-finding rounds (stage
I, ``stage == "ticket"``) and then trains the ticket (stage II, ``stage == "train"``); see
``tuneable_gan.lottery``. ``step`` counts stage-II G steps only; loops run until ``finished``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tuneable_gan.advaug import advaug_g_loss, d_adv_loss
from tuneable_gan.augment import diff_augment, parse_policy
from tuneable_gan.config import Config
from tuneable_gan.data import RealData, Sampler, load_data
from tuneable_gan.errors import CheckpointError, ConfigError, Diverged
from tuneable_gan.losses import LOSSES
from tuneable_gan.lottery import TICKET, TRAIN, TicketSearch
from tuneable_gan.metrics import Evaluator
from tuneable_gan.models import MODELS, DataSpec, build_models, resolve_conditional
from tuneable_gan.regularizers import REGULARIZERS, DBatch, input_grad_norms
from tuneable_gan.sparsity import MaskSet, measured_sparsity
from tuneable_gan.tickets import TicketStore

Tensor = torch.Tensor


def check_available(cfg: Config) -> None:
    """Refuse, in one line per field, what the schema accepts but this version cannot run."""
    problems = []
    for key, value, registry in (("model.arch", cfg.model.arch, MODELS),
                                 ("regularizer.name", cfg.regularizer.name, REGULARIZERS),
                                 ("loss.name", cfg.loss.name, LOSSES)):
        if value not in registry:
            problems.append(f"{key}={value} is not available yet; available: "
                            f"{', '.join(registry.names())}")
    if cfg.sparsity.level > 0 and cfg.model.arch == "toy":
        problems.append("sparsity.level > 0 prunes G's conv weights and model.arch=toy has none; "
                        "use sparsity.level=0")
    if problems:
        raise ConfigError(problems)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is visible; use auto or cpu")
    return torch.device(name)


class GANTrainer:
    """Trains G and D for one validated config; ``state_dict``/``load_state_dict`` for resume."""

    def __init__(self, cfg: Config, device: str | torch.device | None = None,
                 tickets: TicketStore | str | Path | None = None) -> None:
        """``tickets``: the store lottery tickets are shared through (a root directory or a
        TicketStore; default ``tickets.default_root()``); unused when ``sparsity.level`` is 0."""
        check_available(cfg)
        self.device = torch.device(device) if device is not None else resolve_device(
            cfg.train.device)
        self.data: RealData = load_data(cfg.data, "train")
        self.spec = DataSpec(self.data.shape, self.data.num_classes)
        # Fill the arch's default for model.conditional so every part sees the resolved value.
        cfg = dataclasses.replace(cfg, model=resolve_conditional(cfg.model, self.spec))
        if cfg.regularizer.pairing == "same_class" and not cfg.model.conditional:
            raise ConfigError("regularizer.pairing=same_class needs a conditional model "
                              f"(model.conditional resolved to false for {cfg.model.arch} on "
                              f"{cfg.data.name}); set model.conditional=true on labelled data")
        self.cfg = cfg
        torch.manual_seed(cfg.train.seed)
        G, D = build_models(cfg.model, self.spec)
        rng0 = torch.get_rng_state()  # every lottery phase restarts the global RNG from here
        self.G, self.D = G.to(self.device), D.to(self.device)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.conditional = cfg.model.conditional
        self.opt_g, self.opt_d = self._optimizer(self.G, cfg.optim.g_lr), self._optimizer(
            self.D, cfg.optim.d_lr)
        self.loss = LOSSES.get(cfg.loss.name)
        self.reg = REGULARIZERS.get(cfg.regularizer.name)(cfg)
        self.policy = parse_policy(cfg.augment.diffaugment)
        self.images = self.data.images.to(self.device)
        self.labels = self.data.labels.to(self.device)
        self.sampler = Sampler(len(self.data), cfg.optim.batch_size, cfg.train.seed)
        self.gen = torch.Generator(self.device).manual_seed(cfg.train.seed)
        self.step = 0
        self.images_seen = 0
        self.best: dict[str, Any] = {}
        self._evaluator: Evaluator | None = None
        # Lottery tickets: the phase, and G's masks in force (None = dense).
        self.stage, self.round, self.stage_step = TRAIN, 0, 0
        self.masks: MaskSet | None = None
        self.lottery = TicketSearch(self, tickets, rng0) if cfg.sparsity.level > 0 else None

    def _optimizer(self, net: nn.Module, lr: float) -> torch.optim.Optimizer:
        o = self.cfg.optim
        if o.name == "sgd":
            return torch.optim.SGD(net.parameters(), lr=lr, momentum=o.momentum)
        return torch.optim.Adam(net.parameters(), lr=lr, betas=o.betas)

    # -- sampling -------------------------------------------------------------------------------

    def _fake_labels(self, n: int) -> Tensor | None:
        if not self.conditional:
            return None
        return torch.randint(0, self.spec.num_classes, (n,), generator=self.gen,
                             device=self.device)

    def _real_batch(self) -> tuple[Tensor, Tensor | None]:
        idx = self.sampler.next().to(self.device)
        x, y = self.images[idx], self.labels[idx]
        if self.cfg.data.flip:
            flip = torch.rand(x.shape[0], generator=self.gen, device=self.device) < 0.5
            x = torch.where(flip.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)
        return x, (y if self.conditional else None)

    def augment(self, x: Tensor) -> Tensor:
        """DiffAugment T with the trainer's generator (identity when the policy is empty)."""
        return diff_augment(x, self.policy, self.gen) if self.policy else x

    # -- one iteration --------------------------------------------------------------------------

    def d_step(self, d_step: int) -> dict[str, float]:
        """One D update on fakes (first) and reals concatenated, as in the DigGAN reference."""
        B = self.cfg.optim.batch_size
        x_r, y_r = self._real_batch()
        reg_on = self.reg.applies(self.stage_step, d_step)
        y_f = self._fake_labels(B)
        if reg_on:
            y_f = self.reg.fake_labels(y_r, y_f)
        z = self.G.sample_z(B, self.gen, self.device)
        with torch.no_grad():
            x_f = self.G(z, y_f)
        x = self.augment(torch.cat([x_f, x_r]))
        # Gradient norms are logged on the first D step of every run (DigGAN on or off), so the
        # gap can be compared across runs; a graph through them only when a penalty uses them.
        want_norms = d_step == 0 or (reg_on and self.reg.needs_grad_norms)
        if want_norms:
            x = x.detach().requires_grad_(True)
        y = torch.cat([y_f, y_r]) if self.conditional else None
        adv = self._advaug() in ("d", "gd")
        h = self.D.trunk(x) if adv else None  # one trunk pass feeds both AdvAug branches
        logits = self.D.head(h, y) if h is not None else self.D(x, y)
        out_f, out_r = logits[:B], logits[B:]
        d_loss = self.loss.d_loss(out_r, out_f)
        extra = {}
        if h is not None:  # DigGAN and the logged norms stay on the clean logits
            a = self.cfg.augment
            d_adv = d_adv_loss(self.D, h, y, B, self.loss, a.advaug_step, a.advaug_mode)
            extra["d_loss_adv"] = d_adv.item()
            d_loss = 0.5 * d_loss + 0.5 * d_adv
        norms = None
        if want_norms:
            norms = input_grad_norms(logits, x, create_graph=reg_on and self.reg.needs_grad_norms)
        reg_loss = torch.zeros((), device=self.device)
        if reg_on:
            batch = DBatch(x=x, logits=logits, labels=y, n_fake=B, grad_norms=norms,
                           fake_raw=x_f, real_raw=x_r, D=self.D, augment=self.augment,
                           generator=self.gen, step=self.stage_step, d_step=d_step)
            reg_loss = self.reg.penalty(batch)
        total = d_loss + reg_loss
        self.opt_d.zero_grad(set_to_none=True)
        total.backward()
        self.opt_d.step()
        self.images_seen += B
        out = {"d_loss": d_loss.item(), "reg_loss": reg_loss.item(), **extra}
        if norms is not None:
            g = norms.detach()
            out.update(grad_norm_fake=g[:B].mean().item(), grad_norm_real=g[B:].mean().item(),
                       dig=(g[B:] - g[:B]).pow(2).mean().item())
        return out

    def g_step(self) -> dict[str, float]:
        """One G update through T and a frozen D, then the G EMA update; with a ticket, pruned
        weights get no gradient and are re-zeroed after the step and the EMA update."""
        B = self.cfg.optim.batch_size
        y_f = self._fake_labels(B)
        z = self.G.sample_z(B, self.gen, self.device)
        self.D.requires_grad_(False)  # D's parameter grads are not needed for G's update
        try:
            if self._advaug() in ("g", "gd"):
                a = self.cfg.augment
                g_loss = advaug_g_loss(self.G, self.D, z, y_f, self.loss, self.augment,
                                       a.advaug_step, a.advaug_mode)
            else:
                g_loss = self.loss.g_loss(self.D(self.augment(self.G(z, y_f)), y_f))
            self.opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
        finally:
            self.D.requires_grad_(True)
        if self.masks is not None:
            self.masks.mask_grads_(self.G)
        self.opt_g.step()
        if self.masks is not None:
            self.masks.apply_(self.G)
        self._update_ema()
        if self.masks is not None:
            self.masks.apply_(self.G_ema)
        return {"g_loss": g_loss.item()}

    def _advaug(self) -> str:
        """AdvAug as configured in stage II; off while finding the ticket."""
        return self.cfg.augment.advaug if self.stage == TRAIN else "off"

    @torch.no_grad()
    def _update_ema(self) -> None:
        """G_ema <- decay * G_ema + (1 - decay) * G over the whole state (buffers included);
        before ``g_ema_start`` G_ema is a copy of G (BigGAN reference)."""
        decay = self.cfg.optim.g_ema if self.stage_step >= self.cfg.optim.g_ema_start else 0.0
        src = self.G.state_dict()
        for k, t in self.G_ema.state_dict().items():
            if t.is_floating_point():
                t.lerp_(src[k], 1.0 - decay)
            else:
                t.copy_(src[k])

    def train_step(self) -> dict[str, float]:
        """One G iteration; returns its metrics. Raises Diverged on a NaN/inf loss.

        In stage I this may first end a round (prune, store, rewind) and wait for or adopt a
        ticket another trial is computing; see ``tuneable_gan.lottery``.
        """
        if self.lottery is not None and self.stage == TICKET:
            self.lottery.before_step()
        d_metrics = [self.d_step(k) for k in range(self.cfg.optim.d_steps)]
        metrics: dict[str, float] = {}
        for k in d_metrics[0]:
            vals = [m[k] for m in d_metrics if k in m]
            metrics[k] = vals[0] if k in ("dig", "grad_norm_real", "grad_norm_fake") else sum(
                vals) / len(vals)
        metrics.update(self.g_step())
        self.stage_step += 1
        if self.stage == TRAIN:
            self.step += 1
        bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
        if bad:
            raise Diverged(self.log_step, bad)
        metrics.update(step=self.log_step, images_seen=self.images_seen,
                       sparsity=self._sparsity)
        return metrics

    def restart_phase(self, rng0: Tensor) -> None:
        """Start a lottery phase from the (already rewound) G and D: G_ema <- G, fresh
        optimizers and regularizer state, RNG streams and counters as after construction."""
        self.G_ema.load_state_dict(self.G.state_dict())
        self.opt_g = self._optimizer(self.G, self.cfg.optim.g_lr)
        self.opt_d = self._optimizer(self.D, self.cfg.optim.d_lr)
        self.reg = REGULARIZERS.get(self.cfg.regularizer.name)(self.cfg)
        self.sampler = Sampler(len(self.data), self.cfg.optim.batch_size, self.cfg.train.seed)
        self.gen.manual_seed(self.cfg.train.seed)
        torch.set_rng_state(rng0)
        self.step = self.stage_step = self.images_seen = 0
        self.best = {}
        self._sparsity = self.sparsity()

    # -- progress -------------------------------------------------------------------------------

    _sparsity = 0.0  # measured at each phase start; pruned weights stay 0 within a phase

    def sparsity(self) -> float:
        """Measured sparsity of G's conv weights (exact zeros / all)."""
        return measured_sparsity(self.G)

    @property
    def finished(self) -> bool:
        """Stage II (the only stage without a ticket to find) has run ``train.steps``."""
        return self.stage == TRAIN and self.step >= self.cfg.train.steps

    def at_boundary(self, every: int) -> bool:
        """The last step ended a phase or a multiple of ``every`` within it (eval, log and
        checkpoint cadence: per round in stage I, on ``step`` in stage II)."""
        length = self.lottery.length if self.stage == TICKET else self.cfg.train.steps
        return self.stage_step % every == 0 or self.stage_step >= length

    @property
    def progress(self) -> int:
        """G steps on the full schedule (all K rounds, then stage II) up to here."""
        return self.lottery.progress() if self.lottery is not None else self.step

    @property
    def total_steps(self) -> int:
        """G steps of the full schedule (fewer are run where rounds are reused)."""
        return self.cfg.train.steps + (self.lottery.stage_one_steps if self.lottery else 0)

    @property
    def log_step(self) -> int:
        """The ``step`` reports and logs carry: ``step`` in stage II; in stage I the G steps
        before stage II on the full schedule, negative (-K*L+1 .. 0), so rows stay ordered."""
        return self.progress - self.total_steps + self.cfg.train.steps

    def describe_stage(self) -> dict[str, Any]:
        """``stage``, ``round``, ``stage_step`` and the ticket counters, for reports and logs."""
        out: dict[str, Any] = {"stage": self.stage, "round": self.round,
                               "stage_step": self.stage_step}
        if self.lottery is not None:
            out.update(rounds_computed=self.lottery.computed, rounds_reused=self.lottery.reused)
        return out

    def close(self) -> None:
        """Release the ticket lock, if held (a trial that stops mid-round must not keep it)."""
        if self.lottery is not None:
            self.lottery.release()

    # -- evaluation -----------------------------------------------------------------------------

    @property
    def evaluator(self) -> Evaluator:
        """The run's Evaluator, built on first use (it may train or load an extractor)."""
        if self._evaluator is None:
            self._evaluator = Evaluator(self.cfg.eval, self.cfg.data, self.device)
        return self._evaluator

    def evaluate(self) -> dict[str, Any]:
        """Metrics of G_ema (fixed latent seed: same weights, same numbers), plus the best so far.

        The best is tracked on ``fid`` (``w1`` for the 1-D toy), lower is better, and stored in the
        checkpoint; ``<metric>_best`` and ``best_step`` are added to the result. In stage I the
        metrics (of the current round's G_ema) are named ``ticket_<metric>`` and the best is not
        touched: nothing named ``fid`` ever describes a network other than the ticket.
        """
        m = dict(self.evaluator(self.G_ema))
        if self.stage == TICKET:
            return {(k if k == "eval_protocol" else f"ticket_{k}"): v for k, v in m.items()}
        key = "fid" if "fid" in m else "w1"
        value = float(m[key])
        if not self.best or value < self.best["value"]:
            self.best = {"metric": key, "value": value, "step": self.step}
        m[f"{key}_best"] = self.best["value"]
        m["best_step"] = self.best["step"]
        return m

    # -- samples and state ----------------------------------------------------------------------

    @torch.no_grad()
    def samples(self, n: int, seed: int = 0, ema: bool = True) -> Tensor:
        """``n`` samples from G_ema (or G) with a fixed latent seed, on the CPU."""
        G = self.G_ema if ema else self.G
        was_training = G.training
        G.eval()
        gen = torch.Generator(self.device).manual_seed(seed)
        z = G.sample_z(n, gen, self.device)
        y = (torch.arange(n, device=self.device) % self.spec.num_classes
             if self.conditional else None)
        x = G(z, y).cpu()
        G.train(was_training)
        return x

    def state_dict(self) -> dict[str, Any]:
        """Everything an identical continuation needs (tensors and plain containers only)."""
        return {
            "step": self.step,
            "images_seen": self.images_seen,
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "regularizer": self.reg.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": {"train": self.gen.get_state(), "torch": torch.get_rng_state()},
            "best": dict(self.best),
        } | ({"lottery": self.lottery.state_dict()} if self.lottery is not None else {})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()`` (from this or a bitwise-identical config)."""
        self.step = int(state["step"])
        self.images_seen = int(state["images_seen"])
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.reg.load_state_dict(state["regularizer"])
        self.sampler.load_state_dict(state["sampler"])
        self.gen.set_state(state["rng"]["train"].cpu())
        torch.set_rng_state(state["rng"]["torch"].cpu())
        self.best = dict(state["best"])
        self.stage_step = self.step
        if self.lottery is not None:
            if "lottery" not in state:
                raise CheckpointError("checkpoint has no lottery-ticket state but "
                                      f"sparsity.level={self.cfg.sparsity.level}")
            self.lottery.load_state_dict(state["lottery"])
        self._sparsity = self.sparsity()
