"""Gated CRF loss of Obukhov et al., "Gated CRF Loss for Weakly Supervised Semantic Image Segmentation"
(2019), eq. 1-5, normalised as eq. 10, Potts model eq. 11."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from wss_monai.losses.base import UNANNOTATED, LossTerm
from wss_monai.losses.affinity.operator import autocast_off, compute_dtype, match_image_to

DEFAULT_KERNELS = ({"weight": 1.0, "xy": 6.0, "image": 0.1},)
KERNEL_KEYS = {"weight", "xy", "image"}


class _Descriptor:
    """One kernel of eq. 1: weight * exp(-|dxy|^2 / (2 xy^2)) * exp(-sum_c dI_c^2 / (2 image_c^2))."""

    def __init__(self, spec: dict, index: int) -> None:
        if not isinstance(spec, dict):
            raise ValueError(f"GatedCRFLoss kernels[{index}] must be a dict like {DEFAULT_KERNELS[0]}, got {spec!r}.")
        unknown = set(spec) - KERNEL_KEYS
        if unknown:
            raise ValueError(f"GatedCRFLoss kernels[{index}] has unknown key(s) {sorted(unknown)}; allowed: {sorted(KERNEL_KEYS)}.")
        self.weight = float(spec.get("weight", 1.0))
        xy = spec.get("xy")
        image = spec.get("image")
        if xy is None and image is None:
            raise ValueError(f"GatedCRFLoss kernels[{index}] needs 'xy' and/or 'image' bandwidths.")
        if xy is not None and not float(xy) > 0:
            raise ValueError(f"GatedCRFLoss kernels[{index}]['xy'] must be > 0, got {xy!r}.")
        self.xy = None if xy is None else float(xy)
        if image is None:
            self.image = None
        else:
            values = [float(image)] if isinstance(image, (int, float)) else [float(v) for v in image]
            if not values or any(not v > 0 for v in values):
                raise ValueError(f"GatedCRFLoss kernels[{index}]['image'] must be > 0 (one or per channel), got {image!r}.")
            self.image = values

    def spec(self) -> dict:
        out: dict = {"weight": self.weight}
        if self.xy is not None:
            out["xy"] = self.xy
        if self.image is not None:
            out["image"] = self.image[0] if len(self.image) == 1 else list(self.image)
        return out


class _LocalKernel:
    """The ungated window kernel K_ab for |a_y - b_y|, |a_x - b_x| <= r, a != b, both inside the image.

    Applies K to maps by looping over the window offsets with shifted slices: each unordered pair
    {d, -d} is visited once and its kernel used in both directions (K_ab = K_ba). The kernels of one
    window row (fixed dy, all dx) are computed together, (B, 1, 2r + 1, h - dy, w) at most, to keep
    the number of tensor operations small; no (B, C, (2r+1)^2, h, w) tensor is ever formed.
    """

    def __init__(self, descriptors: list[_Descriptor], radius: int, feats: list[torch.Tensor | None],
                 height: int, width: int) -> None:
        self.descriptors, self.radius, self.feats = descriptors, radius, feats
        self.height, self.width = height, width

    def _row(self, dy: int) -> list[int]:
        """The dx of the half window on row dy (dy > 0: all; dy = 0: dx > 0), neighbour possibly inside."""
        r, w = self.radius, self.width
        lo = -min(r, w - 1) if dy > 0 else 1
        return list(range(lo, min(r, w - 1) + 1))

    def _row_kernels(self, dy: int, dxs: list[int], like: torch.Tensor) -> tuple[torch.Tensor | None, list[float]]:
        """K between (y, x) and (y + dy, x + dx_j), shape (B, 1, len(dxs), h - dy, w), plus constants per dx.

        Entries whose neighbour falls outside the image are garbage (computed on zero padding) and
        never read.
        """
        r, h = self.radius, self.height
        n = len(dxs)
        const = [0.0] * n
        total: torch.Tensor | None = None
        for desc, f in zip(self.descriptors, self.feats):
            coefs = [desc.weight * (1.0 if desc.xy is None else math.exp(-0.5 * (dy * dy + dx * dx) / desc.xy**2)) for dx in dxs]
            if f is None:
                const = [c + k for c, k in zip(const, coefs)]
                continue
            fa = f[:, :, : h - dy].unsqueeze(2)  # (B, Ci, 1, h - dy, w); features pre-scaled by 1 / (sqrt(2) sigma)
            fb = F.pad(f[:, :, dy:], (r, r)).unfold(-1, 2 * r + 1, 1)  # view (B, Ci, h - dy, w, 2r + 1), j = dx + r
            fb = fb[..., dxs[0] + r : dxs[-1] + r + 1].movedim(-1, 2)  # view (B, Ci, n, h - dy, w)
            k = torch.empty(fa.shape[0], fa.shape[1], n, h - dy, self.width, dtype=f.dtype, device=f.device)
            torch.sub(fa, fb, out=k)  # explicit contiguous layout: sub would follow fb's permuted strides
            k.square_()
            k = (k.sum(1, keepdim=True) if k.shape[1] > 1 else k).neg_().exp_()
            k.mul_(torch.tensor(coefs, dtype=k.dtype, device=k.device).view(1, 1, n, 1, 1))
            total = k if total is None else total.add_(k)
        return total, const

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``K x`` for maps x (B, C, h, w), accumulated over the window offsets."""
        h, w = self.height, self.width
        z = torch.zeros_like(x)
        for dy in range(0, min(self.radius, h - 1) + 1):
            dxs = self._row(dy)
            if not dxs:
                continue
            kern, const = self._row_kernels(dy, dxs, x)
            for j, dx in enumerate(dxs):
                ay, by = slice(0, h - dy), slice(dy, h)
                ax, bx = slice(max(0, -dx), w - max(0, dx)), slice(max(0, dx), w - max(0, -dx))
                if kern is None:
                    if const[j] == 0.0:
                        continue
                    z[:, :, ay, ax].add_(x[:, :, by, bx], alpha=const[j])
                    z[:, :, by, bx].add_(x[:, :, ay, ax], alpha=const[j])
                    continue
                k = kern[:, :, j, :, ax]
                if const[j]:
                    k = k + const[j]
                z[:, :, ay, ax].addcmul_(k, x[:, :, by, bx])
                z[:, :, by, bx].addcmul_(k, x[:, :, ay, ax])
        return z

    def energy(self, dst: torch.Tensor, src: torch.Tensor, both: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``K src`` and, if ``both``, ``K dst`` (K is symmetric), in one pass over the window."""
        if not both:
            return self.apply(src), None
        c = src.shape[1]
        z = self.apply(torch.cat([src, dst], dim=1))
        return z[:, :c], z[:, c:]


class _GatedEnergy(torch.autograd.Function):
    """Per-image energy sum_a <dst_a, sum_b K_ab src_b>; gradients K src and K dst computed in the same pass."""

    @staticmethod
    def forward(ctx, dst: torch.Tensor, src: torch.Tensor, kernel: _LocalKernel) -> torch.Tensor:  # noqa: D401
        both = ctx.needs_input_grad[1]
        with torch.no_grad():
            k_src, k_dst = kernel.energy(dst, src, both)
            value = (dst * k_src).sum(dim=(1, 2, 3))
        ctx.save_for_backward(k_src if ctx.needs_input_grad[0] else None, k_dst)
        return value

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        k_src, k_dst = ctx.saved_tensors
        g = grad.view(-1, 1, 1, 1)
        return (None if k_src is None else g * k_src), (None if k_dst is None else g * k_dst), None


def _as_mask(name: str, mask: torch.Tensor, batch: int, size: tuple[int, int], reduce_fn: str) -> torch.Tensor:
    """(B, 1, h, w) float gate from a (B, H, W) or (B, 1, H, W) mask at the prediction size or a multiple."""
    if mask.dim() == 3:
        mask = mask.unsqueeze(1)
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[0] != batch:
        raise ValueError(f"GatedCRFLoss: '{name}' must have shape (B, 1, H, W) or (B, H, W) with B={batch}, got {tuple(mask.shape)}.")
    mask = mask.detach().float()
    hi, wi = mask.shape[-2:]
    h, w = size
    if (hi, wi) != (h, w):
        if hi % h or wi % w or hi // h != wi // w or hi < h:
            raise ValueError(
                f"GatedCRFLoss: '{name}' spatial size {(hi, wi)} must equal the prediction's {(h, w)} "
                f"or be the same integer multiple of it."
            )
        f = hi // h
        mask = F.avg_pool2d(mask, f) if reduce_fn == "mean" else -F.max_pool2d(-mask, f)
    return mask


class GatedCRFLoss(LossTerm):
    """Gated CRF loss, Obukhov et al. (2019) eq. 1-5 with the normalisation of eq. 10.

    ``loss = sum_a sum_{b in window(a), b != a} m_dst(a) m_src(b) K_ab sum_{c,c'} mu(c, c') p_a(c) p_b(c') / sum_a m_dst(a)``

    with ``K_ab = sum_p w_p exp(-|xy_a - xy_b|^2 / (2 xy_p^2) - sum_i (I_ai - I_bi)^2 / (2 image_p^2))``
    over a square window of radius ``r`` (eq. 5) and ``mu`` the Potts model (eq. 2, 11:
    ``1 - sum_c p_a(c) p_b(c)`` for normalised probabilities) or any C x C compatibility matrix.

    - Kernels (eq. 1-2): a list of dicts ``{"weight": w, "xy": sigma_xy, "image": sigma_image}``;
      ``xy`` in pixels of the prediction, ``image`` in the image's intensity units (one value or
      one per channel); either may be omitted (not both). The image (the network input, or any
      modality) is average-pooled to the prediction's resolution when it is an integer multiple
      of it (the paper applies the loss on a 4x smaller output).
    - Window: pairs with the neighbour outside the image contribute nothing (no padding); the
      centre is excluded (b != a).
    - Gates (eq. 4, G_ab = m_dst(a) m_src(b)): ``source_mask`` gates the neighbours,
      ``dest_mask`` the centres, ``valid`` both (all (B, 1, H, W) or (B, H, W), at the
      prediction's size or an integer multiple, then average-pooled; values in [0, 1]). With
      ``mask_annotated=True`` annotated pixels (``weak != 255``) receive no energy (the paper's
      destination masking, GCRF_{s,d}); at a larger ``weak`` resolution a prediction pixel counts
      as unannotated only if all its pixels are.
    - Normalisation (eq. 10): the energy divided by ``sum m_dst`` (= N*h*w over the batch without a
      destination mask). ``reduction="mean"`` is the paper's pooled ratio over the batch
      (sum of energies / sum of destination masks); ``"none"`` gives each image's energy over its
      own mask sum, shape (B,); ``"sum"`` sums those. An empty destination mask gives 0.

    Inputs are never modified. Computation loops over the (2r+1)^2 - 1 window offsets with shifted
    slices (each pair {d, -d} once) and a custom backward: memory is a few (B, C, h, w) maps, no
    unfolded (B, C, (2r+1)^2, h, w) tensor. Computes in float32 (float64 inputs stay float64),
    with autocast off.

    Args:
        kernels: kernel descriptors (default one kernel ``{"weight": 1, "xy": 6, "image": 0.1}``,
            the paper's setting for images normalised to about [0, 1]).
        radius: window radius r >= 1 (window 2r + 1; default 5, the paper's 11 x 11).
        compatibility: ``"potts"`` or a C x C nested list ``mu[c][c']`` (class c at the centre,
            c' at the neighbour).
        mask_annotated: exclude annotated pixels from the destinations (needs ``weak``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (see above).

    Batch keys read: ``image`` (when a kernel has an ``image`` bandwidth), optional
    ``source_mask``, ``dest_mask``, ``valid``; ``weak`` with ``mask_annotated=True``.

    Shapes: probs (B, C, h, w) softmax probabilities; image (B, Ci, h*f, w*f) for an integer f >= 1.

    Example::

        >>> import torch
        >>> loss = GatedCRFLoss(kernels=[{"weight": 1, "xy": 6, "image": 0.1}], radius=5)
        >>> probs = torch.softmax(torch.randn(2, 4, 64, 64), dim=1)
        >>> value = loss(probs, image=torch.rand(2, 1, 256, 256))  # image pooled 4x to 64 x 64
    """

    def __init__(self, kernels: Sequence[dict] | None = None, radius: int = 5,
                 compatibility: str | Sequence[Sequence[float]] = "potts", mask_annotated: bool = False,
                 reduction: str = "mean") -> None:
        super().__init__()
        specs = list(DEFAULT_KERNELS if kernels is None else kernels)
        if not specs:
            raise ValueError("GatedCRFLoss needs at least one kernel descriptor.")
        self.descriptors = [_Descriptor(dict(s), i) for i, s in enumerate(specs)]
        if isinstance(radius, bool) or int(radius) != radius or radius < 1:
            raise ValueError(f"GatedCRFLoss radius must be an integer >= 1, got {radius!r}.")
        self.radius = int(radius)
        if isinstance(compatibility, str):
            if compatibility != "potts":
                raise ValueError(f"GatedCRFLoss compatibility must be 'potts' or a C x C matrix, got {compatibility!r}.")
            self.compatibility: torch.Tensor | None = None
        else:
            mat = torch.as_tensor(compatibility, dtype=torch.float64)
            if mat.dim() != 2 or mat.shape[0] != mat.shape[1]:
                raise ValueError(f"GatedCRFLoss compatibility must be a square C x C matrix, got shape {tuple(mat.shape)}.")
            self.compatibility = mat
        self.mask_annotated = bool(mask_annotated)
        self.reduction = self._check_reduction(reduction)

    def extra_repr(self) -> str:
        compat = "potts" if self.compatibility is None else f"matrix {tuple(self.compatibility.shape)}"
        return f"kernels={[d.spec() for d in self.descriptors]}, radius={self.radius}, compatibility={compat}, reduction={self.reduction!r}"

    def forward(self, probs: torch.Tensor, image: torch.Tensor | None = None, weak: torch.Tensor | None = None,
                source_mask: torch.Tensor | None = None, dest_mask: torch.Tensor | None = None,
                valid: torch.Tensor | None = None, **_: object) -> torch.Tensor:
        probs = self._check_probs(probs)
        b, c, h, w = probs.shape
        dtype = compute_dtype(probs, image)
        with autocast_off(probs.device):
            p = probs.to(dtype)
            feats: list[torch.Tensor | None] = []
            pooled = None
            for desc in self.descriptors:
                if desc.image is None:
                    feats.append(None)
                    continue
                if pooled is None:
                    img = self._require("image", image)
                    if img.shape[0] != b:
                        raise ValueError(f"GatedCRFLoss: image batch {img.shape[0]} differs from probs batch {b}.")
                    pooled = match_image_to(img.detach().to(dtype), (h, w), "GatedCRFLoss")
                sig = desc.image * pooled.shape[1] if len(desc.image) == 1 else desc.image
                if len(sig) != pooled.shape[1]:
                    raise ValueError(f"GatedCRFLoss: kernel 'image' has {len(sig)} sigmas but the image has {pooled.shape[1]} channels.")
                scale = torch.tensor([1.0 / (math.sqrt(2.0) * s) for s in sig], dtype=dtype, device=p.device)
                feats.append(pooled * scale.view(1, -1, 1, 1))

            gate_src = gate_dst = None
            if valid is not None:
                gate_src = gate_dst = _as_mask("valid", valid, b, (h, w), "mean").to(dtype)
            if source_mask is not None:
                m = _as_mask("source_mask", source_mask, b, (h, w), "mean").to(dtype)
                gate_src = m if gate_src is None else gate_src * m
            if dest_mask is not None:
                m = _as_mask("dest_mask", dest_mask, b, (h, w), "mean").to(dtype)
                gate_dst = m if gate_dst is None else gate_dst * m
            if self.mask_annotated:
                wk = self._require("weak", weak)
                m = _as_mask("weak", (wk == UNANNOTATED), b, (h, w), "min").to(dtype)
                gate_dst = m if gate_dst is None else gate_dst * m

            if self.compatibility is None:
                mixed = p.sum(dim=1, keepdim=True) - p  # Potts: (mu p)_c = sum_c' p_c' - p_c
            else:
                if self.compatibility.shape[0] != c:
                    raise ValueError(
                        f"GatedCRFLoss: compatibility matrix is {tuple(self.compatibility.shape)} but probs have C={c} classes."
                    )
                mu = self.compatibility.to(dtype=dtype, device=p.device)
                mixed = torch.einsum("ij,bjhw->bihw", mu, p)
            src = mixed if gate_src is None else mixed * gate_src
            dst = p if gate_dst is None else p * gate_dst
            kernel = _LocalKernel(self.descriptors, self.radius, feats, h, w)
            energy = _GatedEnergy.apply(dst, src, kernel)  # (B,)
            if gate_dst is None:
                denom = torch.full_like(energy, float(h * w))
            else:
                denom = gate_dst.sum(dim=(1, 2, 3))
            if self.reduction == "mean":
                total = denom.sum()
                return torch.where(total > 0, energy.sum() / total.clamp_min(1e-30), energy.sum() * 0)
            per_image = torch.where(denom > 0, energy / denom.clamp_min(1e-30), energy * 0)
            return per_image if self.reduction == "none" else per_image.sum()
