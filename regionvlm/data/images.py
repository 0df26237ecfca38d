"""Reading images and mask images: the one place where a file, or a PIL image of any mode,
becomes the model's RGB pixels or a clear :class:`~regionvlm.common.errors.InputError`.

Pixels. The model was trained on what LAVIS feeds it, ``Image.open(path).convert("RGB")``,
so that is the rule wherever it is well defined, and what PIL gets wrong is fixed or refused:

* ``RGB`` as is; ``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, ``RGBX``:
  PIL's conversion (correct colours for all of them).
* Transparency (``RGBA``, ``LA``, ``PA``, ``P`` with a transparent colour, premultiplied
  ``RGBa``/``La``): the alpha channel is dropped and the stored colour kept, exactly as
  LAVIS does (a transparent pixel shows the colour stored under it).
* 16-bit grey (``I;16``, ``I;16B``, ...; 16-bit PNGs open this way): scaled to 8 bits
  (``round(v * 255 / 65535)``). PIL's own conversion clips every value above 255 to white.
* 32-bit integer (``I``): accepted when every value lies in 0..255 (the conversion is then
  exact); otherwise refused, since the brightness scale is not defined.
* 32-bit float (``F``): refused (no defined scale).
* Animations and multi-page files (GIF, APNG, TIFF): the first frame, as LAVIS.
* EXIF orientation: ignored for dataset images (annotations refer to the stored pixels, as
  in COCO and LAVIS); applied for images a person looks at while pointing (``exif=True``:
  the chat's ``--image``, its mask files; Gradio applies it to uploads itself). A dataset
  image whose size differs from what its annotation file records is refused
  (:func:`check_image_size`), naming both files.

File faults. A missing file raises :class:`MissingFileError`; a folder, an unreadable file
(permission, symlink loop), an unknown or damaged format, a truncated file, a 0-pixel image
and an image larger than the decompression-bomb limit raise :class:`InputError` naming the
file. The limit is PIL's ``Image.MAX_IMAGE_PIXELS`` (about 89 million pixels); the
environment variable ``REGIONVLM_MAX_IMAGE_PIXELS`` sets it (``0``: no limit) for trusted
large images. PIL's own warning in that range becomes the error, and its hard error above
twice the limit gets the same message.

Masks (:func:`read_mask_image`): one value per pixel, "non-zero is inside": ``1``, ``L``,
``I;16``, ``I``, ``F`` (finite) by value, ``P`` by palette index (not by the colour, which
may be black for a non-zero index), ``RGB`` by the largest channel. Modes with an alpha
channel or a colour model (``LA``, ``RGBA``, ``CMYK``, ...) have no single meaning of
"inside" and are refused with the fix (save a one-channel PNG).
"""

from __future__ import annotations

import errno
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Tuple, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from regionvlm.common.errors import InputError, MissingFileError, RegionVLMError
from regionvlm.common.io import check_regular_file
from regionvlm.region import MAX_PIXELS_ENV, check_pixel_count, max_image_pixels

logger = logging.getLogger(__name__)

PIL_CONVERTIBLE = ("1", "L", "P", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "LA", "PA", "RGBA")
MASK_MODES = ("1", "L", "P", "I", "F", "RGB")  # plus every I;16 variant
_OS_REASONS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ELOOP: "a symbolic link loop",
    errno.EISDIR: "it is a folder, not a file",
}

Source = Union[str, os.PathLike, bytes]


# ------------------------------------------------------------------ pixels
def to_rgb(image: Image.Image, what: str = "image") -> Image.Image:
    """The model's RGB pixels of a PIL image of any mode (module docstring), or InputError."""
    if not isinstance(image, Image.Image):
        raise InputError(f"{what}: expected a PIL image, got {type(image).__name__}.")
    width, height = image.size
    if width <= 0 or height <= 0:
        raise InputError(f"{what} is {width}x{height} pixels; an image needs at least one pixel.")
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16"):
        grey = np.rint(np.asarray(image).astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "I":
        values = np.asarray(image)
        low, high = int(values.min()), int(values.max())
        if low < 0 or high > 255:
            raise InputError(
                f"{what} has 32-bit integer pixels ranging {low}..{high}; their brightness scale is "
                "not defined. Save it as an 8-bit (or 16-bit) image."
            )
        return Image.fromarray(values.astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        raise InputError(
            f"{what} has floating-point pixels (PIL mode F), whose brightness scale is not defined. "
            "Convert it to 8 bits first, e.g. Image.fromarray((a * 255).clip(0, 255).astype('uint8'))."
        )
    if mode == "P" and "transparency" in image.info:
        return image.convert("RGBA").convert("RGB")  # same colours as convert("RGB"), without PIL's warning
    if mode in ("RGBa", "La"):  # premultiplied alpha: undo it, then drop alpha like every alpha mode
        return image.convert("RGBA" if mode == "RGBa" else "LA").convert("RGB")
    if mode in PIL_CONVERTIBLE:
        return image.convert("RGB")
    raise InputError(
        f"{what} has the PIL mode '{mode}', which has no defined conversion to RGB; "
        "save it as an ordinary 8-bit RGB or greyscale image."
    )


def _first_frame_note(image: Image.Image, what: str) -> None:
    frames = getattr(image, "n_frames", 1)
    if isinstance(frames, int) and frames > 1:
        logger.info("%s has %d frames; using the first (as LAVIS does)", what, frames)


def _name(source: Source, what: str) -> str:
    """``what`` plus the file it came from (bytes are named by ``what`` alone)."""
    return what if isinstance(source, bytes) else f"{what} '{source}'"


def _load(source: Source, what: str, exif: bool) -> Tuple[Image.Image, str]:
    """Open, check the size and decode ``source`` (a path or the bytes of a file) into an
    image detached from the file; every failure of the file is an InputError naming it."""
    name = _name(source, what)
    max_image_pixels()  # before PIL's own guard runs in Image.open
    if not isinstance(source, bytes):
        path = Path(source)
        check_regular_file(path, what)
        if path.is_dir():
            raise InputError(f"{name} is a folder; give an image file.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
                check_pixel_count(image.size[0], image.size[1], name)
                _first_frame_note(image, name)
                image.load()
                upright = ImageOps.exif_transpose(image) if exif else None
                return (upright if upright is not None and upright is not image else image.copy()), name
    except RegionVLMError:
        raise
    except FileNotFoundError:
        raise MissingFileError(f"{name} not found.") from None
    except Image.DecompressionBombError:
        limit = max_image_pixels()
        raise InputError(
            f"{name} has more than twice the {limit:,} pixels allowed (a guard against decompression "
            "bombs: small files that expand to gigabytes). Downscale the image, or, if you trust it, "
            f"raise the limit with the environment variable {MAX_PIXELS_ENV}=N (0: no limit)."
        ) from None
    except UnidentifiedImageError:
        raise InputError(f"{name} is not an image that PIL can read (unknown format or damaged header).") from None
    except OSError as exc:
        reason = _OS_REASONS.get(exc.errno or -1)
        if reason:
            raise InputError(f"cannot read {name}: {reason}.") from None
        raise InputError(f"{name} cannot be decoded; the file is damaged or truncated ({exc}).") from None
    except MemoryError:
        raise
    except Exception as exc:
        raise InputError(f"{name} cannot be decoded; the file is damaged ({type(exc).__name__}: {exc}).") from None


def open_image(source: Source, what: str = "image", exif: bool = False) -> Image.Image:
    """The RGB pixels of an image file (a path, or the bytes of a file); ``exif=True`` turns
    the image upright by its EXIF orientation. Errors: see the module docstring."""
    image, name = _load(source, what, exif)
    return to_rgb(image, name)


def check_image_size(size: Tuple[int, int], expected: Tuple[int, int], image: str, annotation: str) -> None:
    """Refuse an image whose pixels (``size`` = width, height, as read: EXIF orientation
    ignored for dataset images) are not the size an annotation file records for it: its
    regions, masks and RLEs would land on the wrong pixels. Both files are named; a swapped
    width and height says the annotation probably follows the photo's EXIF orientation."""
    width, height = (int(v) for v in size)
    want_w, want_h = (int(v) for v in expected)
    if (width, height) == (want_w, want_h):
        return
    hint = ""
    if (width, height) == (want_h, want_w):
        hint = (
            " Width and height are swapped: the annotation probably describes the photo turned upright by "
            "its EXIF orientation, while dataset images are read as stored (EXIF orientation ignored, as LAVIS "
            "and COCO do); save the image with its pixels upright (e.g. PIL.ImageOps.exif_transpose) or fix "
            "the annotation."
        )
    raise InputError(
        f"{image} is {width}x{height} pixels but {annotation} says {want_w}x{want_h}; the annotation is for "
        f"another version of the image (or another image).{hint or ' Use the images the annotation file belongs to.'}"
    )


def read_image_size(source: Source, what: str = "image") -> Tuple[int, int]:
    """``(width, height)`` from the file's header, without decoding the pixels."""
    name = _name(source, what)
    if not isinstance(source, bytes):
        check_regular_file(source, what)
    max_image_pixels()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
                return image.size
    except FileNotFoundError:
        raise MissingFileError(f"{name} not found.") from None
    except Image.DecompressionBombError:
        raise InputError(
            f"{name} has more than twice the {max_image_pixels():,} pixels allowed (a guard against "
            f"decompression bombs); set {MAX_PIXELS_ENV}=N (0: no limit) if you trust it."
        ) from None
    except UnidentifiedImageError:
        raise InputError(f"{name} is not an image that PIL can read (unknown format or damaged header).") from None
    except OSError as exc:
        raise InputError(f"cannot read {name}: {_OS_REASONS.get(exc.errno or -1, exc)}.") from None


def read_mask_image(source: Source, what: str = "mask", exif: bool = False) -> np.ndarray:
    """One value per pixel (H, W) of a mask image, "non-zero is inside" (module docstring);
    bool for mode ``1``, the palette index for ``P``, the largest channel for ``RGB``."""
    image, name = _load(source, what, exif)
    mode = image.mode
    if mode == "P":
        return np.array(image)  # palette indices
    if mode == "RGB":
        return np.asarray(image).max(axis=2)
    if mode in MASK_MODES or mode.startswith("I;16"):
        values = np.array(image)
        if mode == "F" and not np.all(np.isfinite(values)):
            raise InputError(f"{name} holds NaN or infinite values.")
        return values
    raise InputError(
        f"{name} has the PIL mode '{mode}' (an alpha channel or a colour model), which has no single "
        "meaning of 'inside'. Save the mask as a one-channel PNG (mode L or 1) whose non-zero "
        "pixels are the region."
    )
