"""How the patches of each benchmark set look to D before training: high-frequency share and contrast per set.

For the ID test images and every near- and far-OOD set of a protocol, 300 images are preprocessed as the preset
does and cut into its test patches (the detector's own content-seeded corners); per set it prints the share of the
patches' AC power above half the frequency band (:func:`discopatch.benchmark.curve_diagnostics.radial_power_spectrum`,
the measure the learning curve reports for real, reconstructed and generated patches as ``high_freq_share``) and
the mean per-patch pixel standard deviation (contrast, in [-1, 1] units)::

    python scripts/set_spectra.py --protocol photos --preset small-photo
"""

from __future__ import annotations

import argparse

import numpy as np

from discopatch.benchmark.curve_diagnostics import _high_share, radial_power_spectrum
from discopatch.benchmark.datasets import load_protocol
from discopatch.data.images import stack_images
from discopatch.patches import content_corners, extract_patches, to_tensor
from discopatch.presets import get_preset


def set_view(images: np.ndarray, preset_name: str, channels: int, n_images: int = 300) -> tuple[float, float]:
    """(high-frequency share, mean patch contrast) of the first ``n_images`` of a set, as the preset's D sees it."""
    preset = get_preset(preset_name, channels)
    stack = stack_images(images[:n_images], preset.preprocess)
    p = preset.model.patch_size
    patches = extract_patches(to_tensor(stack), content_corners(stack, p, preset.test_patches, 0), p)
    return _high_share(radial_power_spectrum(patches)), float(patches.float().std(dim=(1, 2, 3)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", default="photos", choices=("fmnist", "photos"))
    parser.add_argument("--preset", default="small-photo")
    args = parser.parse_args()
    data = load_protocol(args.protocol, seed=0, n_test=800, n_ood=500)
    print("| set | high-frequency share | patch contrast (sd) |\n|---|---|---|")
    for name, images in {"ID test": data.id_test, **data.ood}.items():
        share, contrast = set_view(images, args.preset, data.channels)
        print(f"| {name} | {share:.4f} | {contrast:.3f} |")


if __name__ == "__main__":
    main()
