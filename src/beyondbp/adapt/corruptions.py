"""Fashion-MNIST-C: common corruptions of 28×28 grey images, generated locally and seeded.

The corruptions follow the families of "Benchmarking Neural Network Robustness to Common
Corruptions and Perturbations" (Hendrycks & Dietterich, ICLR 2019; CIFAR-10-C / ImageNet-C)
and "MNIST-C: A Robustness Benchmark for Computer Vision" (Mu & Gilmer, 2019). Their reference
code uses scikit-image, OpenCV, ImageMagick and PIL; here every corruption is written with
numpy and scipy only, on images in [0, 1] of shape ``(N, 28, 28)`` (or ``(N, 1, 28, 28)``).
Severity parameters are those of the authors' CIFAR-10-C script (``make_cifar_c.py``, images of
32 pixels, so close in scale to 28) unless stated; the noise families and brightness take the
stronger ImageNet-C values (our choice: a Fashion-MNIST image is mostly black background, and we
wanted severity 5 to be a real shift), and ``pixelate`` / ``elastic_transform`` take our own
values (and ``motion_blur`` ours at severities 4 and 5) so that the distance to the clean image
grows with severity (tested).

========================  ==========================================================  ======================================
corruption                what it does to a pixel image x in [0, 1]                   severity 1 … 5
========================  ==========================================================  ======================================
``gaussian_noise``        x + N(0, σ²), clipped                                       σ = .08 .12 .18 .26 .38  (ImageNet-C)
``shot_noise``            Poisson(x·λ) / λ, clipped                                   λ = 60 25 12 5 3  (ImageNet-C)
``impulse_noise``         a fraction a of pixels set to 0 or 1 (half each)            a = .03 .06 .09 .17 .27  (ImageNet-C)
``defocus_blur``          convolution with a disk of radius r on a 17×17 grid, its    (r, s) = (.3,.4) (.4,.5) (.5,.6) (1,.2)
                          edges softened by a 3×3 Gaussian of std s (mirror border)   (1.5,.1)
``motion_blur``           one-sided line kernel of ``radius`` taps with Gaussian       (radius, σ) = (6,1) (6,1.5) (6,2) (8,2.5)
                          weights exp(−d²/2σ²), at an angle drawn uniformly in        (9,3)
                          [−45°, 45°] per image (ImageMagick's ``-motion-blur``)      (ours at 4, 5: CIFAR's (8,2) (9,2.5)
                                                                                      blur hardly more than (6,2), as the
                                                                                      Gaussian weights vanish by 6 taps)
``contrast``              (x − mean(x))·c + mean(x), per image                        c = .75 .5 .4 .3 .15
``brightness``            x + b, clipped (the HSV value channel of a grey image is    b = .1 .2 .3 .4 .5  (ImageNet-C)
                          the pixel itself)
``pixelate``              area-average down to ⌊28·c⌋ pixels a side, area-upsample    c = .9 .8 .7 .6 .5  (ours: CIFAR's
                          back (PIL's BOX filter)                                     .95 .9 .85 .75 .65 give 26 and 25
                                                                                      pixels at 28, not monotone)
``elastic_transform``     a random affine map (three points moved by up to 28·a),     28·(α, σ, a) with (.1, .04, .02)
                          then a smooth random displacement field: uniform noise       (.15, .04, .03) (.2, .04, .04)
                          in [−1, 1] Gaussian-filtered with std 28·σ, times 28·α;      (.25, .04, .05) (.3, .04, .06)
                          bilinear resampling, mirrored borders                       (ours: CIFAR's values shrink the
                                                                                      affine part as severity grows, so
                                                                                      distance to the clean image falls)
``jpeg``                  JPEG-like quantisation: 8×8 block DCT-II (orthonormal,       quality = 80 65 58 50 40
                          ``scipy.fft.dctn``) of 255·x − 128, each coefficient
                          rounded to a multiple of the standard JPEG luminance table
                          scaled for the quality (IJG formula), inverse DCT; the
                          image is edge-padded to 32×32 for the blocks. No chroma,
                          no entropy coding (lossless, so irrelevant)
========================  ==========================================================  ======================================

Every corrupted image is rounded to 8 bits (``round(255·x) / 255``), as the published sets are
stored as uint8. Randomness: one ``numpy.random.Generator`` per (seed, corruption, severity),
seeded with ``[seed, index of the corruption, severity]``, so the same seed gives the same
bytes whatever other corruptions are generated, and in whatever order. ``jpeg``, ``contrast``,
``brightness``, ``pixelate`` and ``defocus_blur`` use no randomness.

Differences from the reference code worth knowing: ImageMagick's motion blur and OpenCV's
filters are re-implemented (kernel shapes as described above, not bit-identical); the affine
map of ``elastic_transform`` is solved with numpy instead of ``cv2.getAffineTransform``; JPEG
is emulated by its quantisation step alone (real JPEG also works on 8×8 blocks of the same
table, so the artefacts — blockiness, ringing — are of the same kind).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.fft
import scipy.ndimage as ndi
import torch

from ..errors import ConfigError, DataError
from ..options import parse_names

__all__ = ["CORRUPTIONS", "SEVERITIES", "SIDE", "corrupt", "names", "parse_corruptions", "parse_severities"]

SIDE = 28
SEVERITIES = (1, 2, 3, 4, 5)

GAUSSIAN_SIGMA = (0.08, 0.12, 0.18, 0.26, 0.38)
SHOT_RATE = (60.0, 25.0, 12.0, 5.0, 3.0)
IMPULSE_AMOUNT = (0.03, 0.06, 0.09, 0.17, 0.27)
DEFOCUS = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1))
MOTION = ((6, 1.0), (6, 1.5), (6, 2.0), (8, 2.5), (9, 3.0))
CONTRAST = (0.75, 0.5, 0.4, 0.3, 0.15)
BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)
PIXELATE = (0.9, 0.8, 0.7, 0.6, 0.5)
ELASTIC = ((0.1, 0.04, 0.02), (0.15, 0.04, 0.03), (0.2, 0.04, 0.04), (0.25, 0.04, 0.05), (0.3, 0.04, 0.06))
JPEG_QUALITY = (80, 65, 58, 50, 40)

#: The standard JPEG luminance quantisation table (ITU-T T.81, Annex K, Table K.1).
JPEG_LUMA = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=np.float64,
)


# ---------------------------------------------------------------------------------------------
# The corruptions: (images (N, H, W) float64 in [0, 1], severity 1..5, rng) -> images
# ---------------------------------------------------------------------------------------------
def gaussian_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    return x + rng.normal(0.0, GAUSSIAN_SIGMA[severity - 1], size=x.shape)


def shot_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    rate = SHOT_RATE[severity - 1]
    return rng.poisson(x * rate) / rate


def impulse_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    hit = rng.random(x.shape) < IMPULSE_AMOUNT[severity - 1]
    salt = rng.random(x.shape) < 0.5
    out = x.copy()
    out[hit & salt] = 1.0
    out[hit & ~salt] = 0.0
    return out


def _gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    r = np.arange(size) - (size - 1) / 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    g = np.outer(g, g)
    return g / g.sum()


def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """The defocus kernel: a disk of ``radius`` on a 17×17 grid, normalised, softened by a
    3×3 Gaussian of std ``alias_blur``."""
    grid = np.arange(-8, 9)
    xx, yy = np.meshgrid(grid, grid)
    disk = ((xx**2 + yy**2) <= radius**2).astype(np.float64)
    disk /= disk.sum()
    return ndi.convolve(disk, _gaussian_kernel(3, alias_blur), mode="mirror")


def defocus_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    kernel = disk_kernel(*DEFOCUS[severity - 1])
    return ndi.convolve(x, kernel[None], mode="mirror")


def motion_kernel(radius: int, sigma: float, angle_deg: float) -> np.ndarray:
    """A one-sided motion-blur kernel: ``radius`` taps along the direction ``angle_deg`` from
    the centre, weighted exp(−d²/2σ²) and normalised, bilinearly splatted on a square grid."""
    size = 2 * radius + 1
    kernel = np.zeros((size, size))
    theta = np.deg2rad(angle_deg)
    for d in range(radius):
        w = np.exp(-(d**2) / (2 * sigma**2))
        r, c = radius - d * np.sin(theta), radius + d * np.cos(theta)
        r0, c0 = int(np.floor(r)), int(np.floor(c))
        fr, fc = r - r0, c - c0
        for dr, wr in ((0, 1 - fr), (1, fr)):
            for dc, wc in ((0, 1 - fc), (1, fc)):
                if 0 <= r0 + dr < size and 0 <= c0 + dc < size:
                    kernel[r0 + dr, c0 + dc] += w * wr * wc
    return kernel / kernel.sum()


def motion_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    radius, sigma = MOTION[severity - 1]
    angles = rng.uniform(-45.0, 45.0, size=x.shape[0])
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = ndi.convolve(x[i], motion_kernel(radius, sigma, angles[i]), mode="nearest")
    return out


def contrast(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    means = x.mean(axis=(1, 2), keepdims=True)
    return (x - means) * CONTRAST[severity - 1] + means


def brightness(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    return x + BRIGHTNESS[severity - 1]


def box_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` area-averaging resampling matrix: output pixel i averages the input
    interval [i·n_in/n_out, (i+1)·n_in/n_out) weighted by overlap (PIL's BOX filter)."""
    scale = n_in / n_out
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        lo, hi = i * scale, (i + 1) * scale
        for j in range(int(np.floor(lo)), min(int(np.ceil(hi)), n_in)):
            m[i, j] = max(0.0, min(hi, j + 1) - max(lo, j))
    return m / m.sum(axis=1, keepdims=True)


def pixelate(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    side = x.shape[-1]
    small = int(side * PIXELATE[severity - 1])
    down, up = box_resize_matrix(side, small), box_resize_matrix(small, side)
    return up @ (down @ x @ down.T) @ up.T


def _affine_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2×3 affine map A with A·[p, 1] = q for three point pairs (p in src, q in dst)."""
    a = np.hstack([src, np.ones((3, 1))])
    return np.linalg.solve(a, dst).T


def elastic_transform(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    side = x.shape[-1]
    alpha, sigma, shift = (side * c for c in ELASTIC[severity - 1])
    centre, half = side // 2, side // 3
    # points as (column, row), as OpenCV's getAffineTransform takes them
    pts = np.array([[centre + half, centre + half], [centre + half, centre - half], [centre - half, centre - half]], float)
    rows, cols = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        moved = pts + rng.uniform(-shift, shift, size=pts.shape)
        # warpAffine maps source to destination; sample the source at the inverse map
        forward = np.vstack([_affine_from_points(pts, moved), [0.0, 0.0, 1.0]])
        inverse = np.linalg.inv(forward)
        src_c = inverse[0, 0] * cols + inverse[0, 1] * rows + inverse[0, 2]
        src_r = inverse[1, 0] * cols + inverse[1, 1] * rows + inverse[1, 2]
        warped = ndi.map_coordinates(x[i], [src_r, src_c], order=1, mode="mirror")
        dx = ndi.gaussian_filter(rng.uniform(-1, 1, size=(side, side)), sigma, mode="reflect", truncate=3) * alpha
        dy = ndi.gaussian_filter(rng.uniform(-1, 1, size=(side, side)), sigma, mode="reflect", truncate=3) * alpha
        out[i] = ndi.map_coordinates(warped, [rows + dy, cols + dx], order=1, mode="reflect")
    return out


def jpeg_table(quality: int) -> np.ndarray:
    """The luminance quantisation table for ``quality`` (1..100) by the IJG scaling rule."""
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    return np.clip(np.floor((JPEG_LUMA * scale + 50) / 100), 1, 255)


def jpeg(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    n, h, w = x.shape
    ph, pw = -h % 8, -w % 8
    padded = np.pad(x * 255.0 - 128.0, ((0, 0), (0, ph), (0, pw)), mode="edge")
    bh, bw = padded.shape[1] // 8, padded.shape[2] // 8
    blocks = padded.reshape(n, bh, 8, bw, 8).transpose(0, 1, 3, 2, 4)
    coef = scipy.fft.dctn(blocks, type=2, axes=(-2, -1), norm="ortho")
    table = jpeg_table(JPEG_QUALITY[severity - 1])
    coef = np.round(coef / table) * table
    back = scipy.fft.idctn(coef, type=2, axes=(-2, -1), norm="ortho")
    back = back.transpose(0, 1, 3, 2, 4).reshape(n, bh * 8, bw * 8)[:, :h, :w]
    return (back + 128.0) / 255.0


#: name -> corruption function, in the order of the table above (the order fixes the seeds).
CORRUPTIONS: dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "defocus_blur": defocus_blur,
    "motion_blur": motion_blur,
    "contrast": contrast,
    "brightness": brightness,
    "pixelate": pixelate,
    "elastic_transform": elastic_transform,
    "jpeg": jpeg,
}


def names() -> list[str]:
    """The corruption names, in their fixed order."""
    return list(CORRUPTIONS)


def _check_severity(severity: object) -> int:
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 1 <= int(severity) <= 5:
        raise ConfigError(f"invalid severity {severity!r}: it must be a whole number from 1 to 5")
    return int(severity)


def corrupt(images: torch.Tensor | np.ndarray, name: str, severity: int, seed: int = 0) -> torch.Tensor:
    """``images`` (``(N, 28, 28)`` or ``(N, 1, 28, 28)``, values in [0, 1]) corrupted by
    ``name`` at ``severity`` (1..5), as a float32 tensor of the same shape in [0, 1], rounded to
    8 bits. Same (images, name, severity, seed) -> same bytes."""
    if name not in CORRUPTIONS:
        raise ConfigError(f"unknown corruption {name!r}; corruptions are: {', '.join(CORRUPTIONS)}")
    severity = _check_severity(severity)
    array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    shape = array.shape
    if array.ndim == 4 and shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 3 or array.shape[1] < 8 or array.shape[2] < 8:
        raise DataError(f"corruptions take grey images of shape (N, H, W) or (N, 1, H, W) of at least 8x8 pixels, got {tuple(shape)}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
        raise DataError("corruptions take finite pixel values in [0, 1]; load the data with normalize=False")
    rng = np.random.default_rng([int(seed), list(CORRUPTIONS).index(name), severity])
    out = np.clip(CORRUPTIONS[name](array, severity, rng), 0.0, 1.0)
    out = np.round(out * 255.0) / 255.0
    return torch.from_numpy(out.astype(np.float32)).reshape(shape)


def parse_corruptions(text: str) -> list[str]:
    """``"all"`` or a comma-separated list of corruption names -> the names (validated)."""
    return parse_names(text, "corruption", CORRUPTIONS, allow_all=True)


def parse_severities(text: str) -> list[int]:
    """``"5"``, ``"1,3,5"`` or ``"all"`` -> severities (each a whole number from 1 to 5)."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if items == ["all"]:
        return list(SEVERITIES)
    out = []
    for item in items:
        try:
            value = int(item)
        except ValueError:
            value = None
        if value is None or not 1 <= value <= 5:
            raise ConfigError(f"invalid severity {item!r}: severities are whole numbers from 1 to 5 (or 'all')")
        out.append(value)
    if not out or len(set(out)) != len(out):
        raise ConfigError(f"invalid severities {text!r}: give distinct whole numbers from 1 to 5, comma-separated")
    return sorted(out)
