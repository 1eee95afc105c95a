"""The shared ticket store (tuneable_gan.tickets): what keys a ticket, first writer wins,
concurrent finders compute each round once, readers never see a partial file."""

from __future__ import annotations

import copy
import multiprocessing as mp
import os
import time
from pathlib import Path

import torch
from conftest import remaining_after, tiny_config

from tuneable_gan.sparsity import prunable
from tuneable_gan.tickets import TicketStore, round_length, ticket_fields, ticket_key
from tuneable_gan.trainer import GANTrainer

# -- ticket key -----------------------------------------------------------------------------------

def test_ticket_key_covers_stage_one_fields_only(tiny) -> None:
    base = tiny(sparsity__round_steps=5)
    key = ticket_key(base)
    same = {"sparsity.level": 0.738, "augment.advaug": "gd", "augment.advaug_step": 0.1,
            "augment.advaug_mode": "worst_case", "train.eval_every": 7,
            "train.checkpoint_every": 7, "train.log_every": 7, "train.device": "auto",
            "eval.num_samples": 100, "eval.kid": True, "train.steps": 99}
    for k, v in same.items():
        assert ticket_key(base.replace(**{k: v})) == key, k
    differ = {"regularizer.weight": 3.0, "augment.diffaugment": "color", "train.seed": 1,
              "data.fraction": 0.2, "sparsity.per_round": 0.3, "sparsity.mask_from": "g_ema",
              "sparsity.round_steps": 6, "optim.g_lr": 1e-3, "model.g_ch": 4}
    for k, v in differ.items():
        assert ticket_key(base.replace(**{k: v})) != key, k
    # Without round_steps a round is train.steps long, so train.steps shapes the ticket.
    full = tiny()
    assert ticket_key(full.replace(**{"train.steps": 99})) != ticket_key(full)
    assert "train.steps" not in ticket_fields(base) and "train.steps" in ticket_fields(full)
    assert key.startswith("dcgan-")
    assert round_length(base) == 5 and round_length(full) == full.train.steps


# -- ticket store ---------------------------------------------------------------------------------

def test_latest_returns_highest_stored_round(tmp_path: Path) -> None:
    store = TicketStore(tmp_path)
    init = {"init_G": {"w": torch.arange(3.0)}, "init_D": {"v": torch.ones(2)}}
    assert store.latest("k", 5) is None
    for r in (0, 1, 3):
        assert store.save("k", r, {**init, "masks": {"w": torch.ones(3, dtype=torch.bool)}})
    assert not store.save("k", 1, {"masks": {}})  # first writer wins
    assert store.latest("k", 2)[0] == 1
    assert store.latest("k", 0)[0] == 0
    r, payload = store.latest("k", 9)
    assert r == 3 and payload["round"] == 3
    assert torch.equal(payload["init_G"]["w"], torch.arange(3.0))
    assert store.latest("other", 9) is None
    assert sorted(p.name for p in (tmp_path / "k").glob("*.pt")) == [
        "init.pt", "round_000.pt", "round_001.pt", "round_003.pt"]
    for p in (tmp_path / "k").glob("*.pt"):
        torch.load(p, weights_only=True)


class _NotingStore(TicketStore):
    """A TicketStore that notes every round it is asked to store (round 0 by the trial that
    found the key empty, then one per computed round; always under the key's lock unless the
    lock timed out) and then dawdles, so that the trials overlap."""

    def __init__(self, root: str, log: str, delay: float, **kw) -> None:
        super().__init__(root, **kw)
        self.log, self.delay = log, delay

    def save(self, key, round, payload, fields=None) -> bool:
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{round}\n".encode())
        os.close(fd)
        time.sleep(self.delay)
        return super().save(key, round, payload, fields)


def _find_worker(root: str, log: str, delay: float, timeout: float | None, out: str) -> None:
    import tuneable_gan.lottery as lottery

    torch.set_num_threads(1)
    real = lottery.compute_masks

    def trial_specific(G, G_ema, mask_from, prev, per_round):
        # Trials of one key compute identical rounds; trial-specific "training" noise makes a
        # ticket mixed from two trials show.
        noisy = copy.deepcopy(G)
        g = torch.Generator().manual_seed(os.getpid())
        with torch.no_grad():
            for _, p in prunable(noisy):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
        return real(noisy, None, "g", prev, per_round)

    lottery.compute_masks = trial_specific  # this forked process only
    store = _NotingStore(root, log, delay, timeout_s=timeout, poll_s=0.01)
    t = GANTrainer(tiny_config(sparsity__level=0.488, sparsity__round_steps=1, train__steps=1),
                   tickets=store)
    assert t.phase.rounds == 3
    while not t.finished:
        t.train_step()
    t.close()
    torch.save({"masks": t.phase.masks.state_dict(), "init": t.phase.init_G}, out)


def _run_finders(tmp_path: Path, delay: float, timeout: float | None) -> tuple[dict, list]:
    ctx = mp.get_context("fork")
    log = str(tmp_path / "computed.log")
    outs = [str(tmp_path / f"out{i}.pt") for i in range(3)]
    procs = [ctx.Process(target=_find_worker,
                         args=(str(tmp_path / "store"), log, delay, timeout, o))
             for o in outs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    counts: dict[int, int] = {}
    for line in Path(log).read_text().split():
        counts[int(line)] = counts.get(int(line), 0) + 1
    return counts, [torch.load(o, weights_only=True) for o in outs]


def _check_one_ticket(tmp_path: Path, results: list) -> None:
    store = TicketStore(tmp_path / "store")
    (key,) = [d.name for d in store.root.iterdir() if d.is_dir()]
    r, payload = store.latest(key, 3)
    assert r == 3 and store.rounds(key) == [0, 1, 2, 3]
    masks = payload["masks"]
    N = sum(m.numel() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == remaining_after(N, 3)
    for res in results:  # every trial trains the one stored ticket
        assert res["masks"].keys() == masks.keys()
        assert all(torch.equal(res["masks"][k], masks[k]) for k in masks)
        assert res["init"].keys() == payload["init_G"].keys()
        assert all(torch.equal(res["init"][k], payload["init_G"][k]) for k in res["init"])
    prev = store.load(key, 0)["masks"]
    for k in (1, 2, 3):  # the stored chain is consistent: each round refines the previous one
        cur = store.load(key, k)["masks"]
        assert all((cur[n] <= prev[n]).all() for n in cur)
        prev = cur


def test_concurrent_finders_compute_each_round_once(tmp_path: Path) -> None:
    counts, results = _run_finders(tmp_path, delay=0.3, timeout=30.0)
    assert counts == {0: 1, 1: 1, 2: 1, 3: 1}
    _check_one_ticket(tmp_path, results)


def test_timed_out_waiters_recompute_but_share_the_stored_ticket(tmp_path: Path) -> None:
    counts, results = _run_finders(tmp_path, delay=0.3, timeout=0.02)
    assert sum(counts.values()) > 4  # somebody gave up waiting and computed honestly
    _check_one_ticket(tmp_path, results)


def _big_writer(root: str, n: int) -> None:
    store = TicketStore(root)
    for r in range(n):
        data = torch.full((2_000_000,), float(r))
        store.save("key", r, {"masks": {"w": data > -1}, "data": data})


def test_reader_never_sees_a_partial_file(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    proc = ctx.Process(target=_big_writer, args=(str(tmp_path), 12))
    proc.start()
    store = TicketStore(tmp_path)
    seen = set()
    while proc.is_alive():
        found = store.latest("key", 99)  # polls while files are being written
        if found is not None:
            r, payload = found
            assert payload["data"].numel() == 2_000_000 and (payload["data"] == r).all()
            assert payload["masks"]["w"].all()
            seen.add(r)
    proc.join()
    assert len(seen) >= 3  # the reader did overlap the writes
    assert proc.exitcode == 0 and store.rounds("key") == list(range(12))
    assert not [p for p in (tmp_path / "key").iterdir() if p.name.endswith(".tmp")]
