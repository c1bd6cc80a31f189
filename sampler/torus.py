"""The base process on the torus, its wrapped-normal laws and its bridge (ALGORITHM.md section 6b).

Torsion states are flat tensors ``phi [T]`` over all torsions of a batch, with ``torsion_batch [T]`` (long)
naming the sample of each torsion and one time per sample ``t [G]``. Angles are absolute, in radians, in
``[-pi, pi)``.

The base process is ``dphi_t = sigma_t dB_t`` wrapped onto the circle, ``phi_0 = 0``, with the geometric
schedule of section 2 (``sigma_min = pi / 100``, ``sigma_max = pi``). Its law at time ``t`` is the wrapped
normal ``WN(0, h_t^2)``, evaluated as a sum over the images ``phi + 2 pi k``, ``|k| <= K``:

.. math::

    \\log WN(\\phi; 0, h^2) = \\log \\sum_{|k| \\le K} \\mathcal{N}(\\phi + 2\\pi k; 0, h^2),
    \\qquad \\partial_\\phi \\log WN = -\\sum_k w_k \\frac{\\phi + 2\\pi k}{h^2},
    \\quad w_k \\propto \\mathcal{N}(\\phi + 2\\pi k; 0, h^2).

Bridge given ``phi_1``: draw an image ``k`` with probability ``w_k`` (at ``h_1^2``), draw the Euclidean
bridge ``0 -> L = phi_1 + 2 pi k``, ``X_t ~ N((h_t^2 / h_1^2) L, h_t^2 alpha_t^2 / h_1^2)``, and wrap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from sampler.schedule import GeometricNoiseSchedule

__all__ = [
    "TORSION_SIGMA_MAX",
    "TORSION_SIGMA_MIN",
    "TorusBase",
    "TorusBridgeSample",
    "image_log_weights",
    "torsion_schedule",
    "torus_bridge_drift_target",
    "torus_bridge_sample",
    "wrap",
    "wrapped_normal_log_prob",
    "wrapped_normal_score",
]

TORSION_SIGMA_MIN = math.pi / 100.0
"""``sigma_min`` of the torsional schedule (radians)."""
TORSION_SIGMA_MAX = math.pi
"""``sigma_max`` of the torsional schedule (radians)."""

_TWO_PI = 2.0 * math.pi


def torsion_schedule() -> GeometricNoiseSchedule:
    """The published torsional schedule: ``sigma_min = pi / 100``, ``sigma_max = pi`` (radians)."""
    return GeometricNoiseSchedule(sigma_min=TORSION_SIGMA_MIN, sigma_max=TORSION_SIGMA_MAX)


def wrap(phi: torch.Tensor) -> torch.Tensor:
    """Map angles (radians) onto ``[-pi, pi)``: ``((phi + pi) mod 2 pi) - pi``.

    Example:
        >>> torch.allclose(wrap(torch.tensor([math.pi, 1.5 * math.pi])), torch.tensor([-math.pi, -0.5 * math.pi]))
        True
    """
    wrapped = torch.remainder(phi + math.pi, _TWO_PI) - math.pi
    # remainder may round up to exactly 2 pi in floating point; keep the interval half-open
    return torch.where(wrapped >= math.pi, wrapped - _TWO_PI, wrapped)


def _check_images(num_images: int) -> None:
    if num_images < 0:
        raise ValueError(f"num_images must be >= 0, got {num_images}")


def _image_offsets(num_images: int, like: torch.Tensor) -> torch.Tensor:
    """``2 pi k`` for ``k = -K .. K`` as ``[2K + 1]`` in the dtype and device of ``like``."""
    _check_images(num_images)
    k = torch.arange(-num_images, num_images + 1, dtype=like.dtype, device=like.device)
    return _TWO_PI * k


def image_log_weights(phi: torch.Tensor, variance: torch.Tensor | float, *, num_images: int = 6) -> torch.Tensor:
    """``log N(phi + 2 pi k; 0, variance)`` for ``k = -K .. K``: shape ``[*phi.shape, 2K + 1]``.

    ``variance`` (radians squared, > 0) is a float or broadcasts against ``phi``.
    """
    var = torch.as_tensor(variance, dtype=phi.dtype, device=phi.device).unsqueeze(-1)
    lifted = phi.unsqueeze(-1) + _image_offsets(num_images, phi)
    return -0.5 * lifted**2 / var - 0.5 * torch.log(_TWO_PI * var)


def wrapped_normal_log_prob(phi: torch.Tensor, variance: torch.Tensor | float, *, num_images: int = 6) -> torch.Tensor:
    """``log WN(phi; 0, variance) = logsumexp_k log N(phi + 2 pi k; 0, variance)``, same shape as ``phi``.

    A density on ``[-pi, pi)`` with respect to the Lebesgue measure (it integrates to 1 there, up to the
    mass of the truncated images).
    """
    return torch.logsumexp(image_log_weights(phi, variance, num_images=num_images), dim=-1)


def wrapped_normal_score(phi: torch.Tensor, variance: torch.Tensor | float, *, num_images: int = 6) -> torch.Tensor:
    """``d/dphi log WN(phi; 0, variance) = -sum_k w_k (phi + 2 pi k) / variance`` with
    ``w = softmax_k log N(phi + 2 pi k; 0, variance)``; same shape as ``phi``."""
    logw = image_log_weights(phi, variance, num_images=num_images)
    var = torch.as_tensor(variance, dtype=phi.dtype, device=phi.device)
    lifted = phi.unsqueeze(-1) + _image_offsets(num_images, phi)
    return -(torch.softmax(logw, dim=-1) * lifted).sum(-1) / var


@dataclass(frozen=True, kw_only=True)
class TorusBase:
    """The wrapped base process ``dphi = sigma_t dB_t``, ``phi_0 = 0``, and its terminal law ``WN(0, h_1^2)``.

    Attributes:
        schedule: the noise schedule in radians (default :func:`torsion_schedule`).
        num_images: ``K``, the images ``phi + 2 pi k`` with ``|k| <= K`` summed in every wrapped normal.

    Example:
        >>> base = TorusBase()
        >>> base.terminal_log_prob(torch.zeros(3)).shape
        torch.Size([3])
    """

    schedule: GeometricNoiseSchedule = field(default_factory=torsion_schedule)
    num_images: int = 6

    def __post_init__(self) -> None:
        _check_images(self.num_images)

    def terminal_variance(self) -> float:
        """``h_1^2`` (radians squared)."""
        return self.schedule.terminal_variance()

    def terminal_log_prob(self, phi: torch.Tensor) -> torch.Tensor:
        """``log p_1^base(phi) = log WN(phi; 0, h_1^2)`` per torsion."""
        return wrapped_normal_log_prob(phi, self.terminal_variance(), num_images=self.num_images)

    def terminal_score(self, phi: torch.Tensor) -> torch.Tensor:
        """``d/dphi log p_1^base(phi)`` per torsion."""
        return wrapped_normal_score(phi, self.terminal_variance(), num_images=self.num_images)

    def marginal_log_prob(self, t: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        """``log WN(phi; 0, h_t^2)``; ``t`` broadcasts against ``phi`` (``t > 0``)."""
        return wrapped_normal_log_prob(phi, self.schedule.h2(t), num_images=self.num_images)


@dataclass(frozen=True, kw_only=True)
class TorusBridgeSample:
    """A draw of the torus bridge ``0 -> phi_1`` at times ``t``.

    Attributes:
        t: ``[G]`` the time of each sample.
        phi_t: ``[T]`` the bridge state, wrapped onto ``[-pi, pi)``.
        lifted_t: ``[T]`` the unwrapped Euclidean bridge state (``wrap(lifted_t) == phi_t``).
        lifted_1: ``[T]`` the lifted end point ``phi_1 + 2 pi k``.
        image: ``[T]`` long, the image index ``k`` drawn.
    """

    t: torch.Tensor
    phi_t: torch.Tensor
    lifted_t: torch.Tensor
    lifted_1: torch.Tensor
    image: torch.Tensor


def _check_flat(t: torch.Tensor, phi: torch.Tensor, torsion_batch: torch.Tensor) -> None:
    if t.dim() != 1:
        raise ValueError(f"t must be [G] (one time per sample), got shape {tuple(t.shape)}")
    if phi.dim() != 1 or phi.shape != torsion_batch.shape:
        raise ValueError(
            f"phi and torsion_batch must both be [T], got {tuple(phi.shape)} and {tuple(torsion_batch.shape)}"
        )
    if torsion_batch.numel() and int(torsion_batch.max()) >= t.shape[0]:
        raise ValueError(f"torsion_batch names sample {int(torsion_batch.max())} but t has {t.shape[0]} entries")


def _uniform(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    draw_on = generator.device if generator is not None else like.device  # a CPU generator may drive CUDA
    return torch.rand(shape, generator=generator, dtype=like.dtype, device=draw_on).to(like.device)


def _normal(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    draw_on = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, dtype=like.dtype, device=draw_on).to(like.device)


def _draw_images(base: TorusBase, phi1: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Image index ``k`` per torsion with probability ``∝ N(phi_1 + 2 pi k; 0, h_1^2)`` (inverse CDF)."""
    logw = image_log_weights(phi1, base.terminal_variance(), num_images=base.num_images)
    cdf = torch.softmax(logw, dim=-1).cumsum(-1)
    u = _uniform((phi1.shape[0], 1), phi1, generator) * cdf[:, -1:]
    index = torch.searchsorted(cdf.contiguous(), u.contiguous()).squeeze(-1).clamp_max(2 * base.num_images)
    return index - base.num_images


def torus_bridge_sample(
    base: TorusBase,
    t: torch.Tensor,
    phi1: torch.Tensor,
    torsion_batch: torch.Tensor,
    generator: torch.Generator | None = None,
) -> TorusBridgeSample:
    """Draw ``phi_t`` from the torus bridge of the base process pinned at ``0`` and ``phi_1``.

    ``t``: ``[G]``; ``phi1``, ``torsion_batch``: ``[T]``. The image ``k`` is drawn with probability
    ``∝ N(phi_1 + 2 pi k; 0, h_1^2)``, then ``lifted_t ~ N((h_t^2 / h_1^2) L, h_t^2 alpha_t^2 / h_1^2)`` with
    ``L = phi_1 + 2 pi k``, and ``phi_t = wrap(lifted_t)``.

    Example:
        >>> # b = torus_bridge_sample(TorusBase(), torch.rand(G), phi1, torsion_batch, generator)
    """
    _check_flat(t, phi1, torsion_batch)
    image = _draw_images(base, phi1, generator)
    lifted_1 = phi1 + _TWO_PI * image.to(phi1.dtype)
    h2_t = base.schedule.h2(t)
    h2_1 = base.terminal_variance()
    mean_scale = (h2_t / h2_1)[torsion_batch]
    std = torch.sqrt((h2_t * base.schedule.alpha2(t) / h2_1).clamp_min(0.0))[torsion_batch]
    lifted_t = mean_scale * lifted_1 + std * _normal(tuple(phi1.shape), phi1, generator)
    return TorusBridgeSample(t=t, phi_t=wrap(lifted_t), lifted_t=lifted_t, lifted_1=lifted_1, image=image)


def torus_bridge_drift_target(
    base: TorusBase,
    t: torch.Tensor,
    phi_t: torch.Tensor,
    phi1: torch.Tensor,
    torsion_batch: torch.Tensor,
) -> torch.Tensor:
    """Bridge-matching target for ``v = u / sigma_t`` on the torus, ``[T]``.

    The drift of the torus bridge pinned at ``phi_1`` is ``sigma_t^2 d/dphi_t log WN(phi_1 - phi_t; 0,
    alpha_t^2)``, so

    .. math::

        v^\\star = \\sum_k w_k \\frac{d + 2\\pi k}{\\alpha_t^2}, \\quad d = \\mathrm{wrap}(\\phi_1 - \\phi_t),
        \\quad w_k \\propto \\mathcal{N}(d + 2\\pi k; 0, \\alpha_t^2),

    the conditional expectation (given the wrapped ``phi_t`` and ``phi_1``) of the Euclidean bridge drift
    ``(L - lifted_t) / alpha_t^2`` of :func:`torus_bridge_sample`: the same regression minimiser with less
    variance. Diverges like ``1 / alpha_t`` as ``t -> 1``.
    """
    _check_flat(t, phi1, torsion_batch)
    if phi_t.shape != phi1.shape:
        raise ValueError(f"phi_t and phi1 must have the same shape, got {tuple(phi_t.shape)} and {tuple(phi1.shape)}")
    alpha2 = base.schedule.alpha2(t)[torsion_batch]
    return -wrapped_normal_score(wrap(phi1 - phi_t), alpha2, num_images=base.num_images)
