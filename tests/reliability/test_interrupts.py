"""Ctrl-C in the middle of a training step: the step finishes, the checkpoint is whole, resuming is exact."""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest
import torch

from discopatch.config import ModelConfig, TrainConfig
from discopatch.training.interrupts import interrupt_between_steps
from discopatch.training.trainer import Trainer

MODEL = ModelConfig(channels=1, patch_size=16, widths=(8, 16), latent_dim=8)
IMAGES = np.random.default_rng(0).integers(0, 256, size=(16, 32, 32, 1), dtype=np.uint8)
pytestmark = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread()
    or signal.getsignal(signal.SIGINT) is not signal.default_int_handler,
    reason="needs Python's default SIGINT handler in the main thread",
)


def _trainer(steps: int) -> Trainer:
    cfg = TrainConfig(epochs=None, max_steps=steps, batch_images=4, train_patches=2, grouping="image")
    return Trainer(MODEL, cfg, device="cpu")


def _interrupt_inside_the_vae_update_of_step(trainer: Trainer, step: int) -> None:
    """Send SIGINT to this process right after the VAE's optimiser step of ``step`` (before D's update)."""
    original = trainer.opt_g.step

    def step_then_interrupt(*args: object, **kwargs: object) -> object:
        result = original(*args, **kwargs)
        if trainer.state.step == step - 1:
            os.kill(os.getpid(), signal.SIGINT)
        return result

    trainer.opt_g.step = step_then_interrupt  # type: ignore[method-assign]


def test_an_interrupt_inside_a_step_stops_after_it_and_resumes_to_the_uninterrupted_result(tmp_path) -> None:
    reference = _trainer(5)
    reference.fit(IMAGES, progress=False)

    interrupted = _trainer(5)
    _interrupt_inside_the_vae_update_of_step(interrupted, 3)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(IMAGES, checkpoint_dir=tmp_path, progress=False)
    assert interrupted.state.step == 3  # the interrupted step was finished and counted
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is restored

    resumed = Trainer.from_checkpoint(tmp_path, device="cpu")
    assert resumed.state.step == 3
    resumed.fit(IMAGES, progress=False)
    assert resumed.state.step == 5
    for a, b in zip(reference.D.parameters(), resumed.D.parameters()):
        assert torch.equal(a, b)


def test_a_second_interrupt_stops_at_once() -> None:
    with interrupt_between_steps() as pending:
        os.kill(os.getpid(), signal.SIGINT)
        assert pending.requested and not pending.forced
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
        assert pending.forced
    with pytest.raises(KeyboardInterrupt):
        pending.raise_if_requested()


def test_a_process_that_ignores_sigint_keeps_ignoring_it() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupt_between_steps() as pending:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
        assert not pending.requested
    finally:
        signal.signal(signal.SIGINT, previous)
