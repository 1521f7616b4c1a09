"""Where the data comes from (`DataSpec`) and how its images are read (`ImageOptions`)."""

from __future__ import annotations

import dataclasses

from vae_tf.config import UserError

SPEC_KINDS = ("bundled", "tfds", "idx", "npz", "images")
SPEC_FORMS = ("bundled", "tfds:NAME", "idx:DIR", "npz:FILE", "images:DIR")


class DataError(UserError, ValueError):
    """A dataset spec or file that cannot be used; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """Where the data comes from.

    Args:
        kind: str. One of `SPEC_KINDS`: "bundled", "tfds", "idx", "npz" or "images".
        location: str. "" for bundled, else the TFDS name (with optional
            config/version, as `tfds.builder` accepts), the IDX directory, the .npz
            path or the folder of pictures.

    Example:
        >>> DataSpec.parse("idx:/data/mnist")
        DataSpec(kind='idx', location='/data/mnist')
        >>> str(DataSpec.parse("images:~/photos"))
        'images:~/photos'
    """

    kind: str
    location: str = ""

    def __post_init__(self):
        if self.kind not in SPEC_KINDS:
            raise DataError(
                f"unknown data source kind {self.kind!r}; expected one of "
                f"{', '.join(SPEC_FORMS)}"
            )
        if (self.kind == "bundled") != (not self.location):
            form = SPEC_FORMS[SPEC_KINDS.index(self.kind)]
            raise DataError(
                f"data spec {self.kind!r} with location {self.location!r} is "
                f"malformed; write it as {form!r}"
            )

    @classmethod
    def parse(cls, spec: str | DataSpec) -> DataSpec:
        """Parses "bundled", "tfds:NAME", "idx:DIR", "npz:FILE" or "images:DIR".

        A `DataSpec` is returned unchanged. Anything else raises `DataError`
        listing the accepted forms.
        """
        if isinstance(spec, DataSpec):
            return spec
        forms = ", ".join(SPEC_FORMS)
        if not isinstance(spec, str):
            raise DataError(
                f"data spec must be a string, got {type(spec).__name__}; use one of {forms}"
            )
        if spec == "bundled":
            return cls("bundled", "")
        kind, sep, location = spec.partition(":")
        if not sep or kind not in SPEC_KINDS[1:] or not location:
            raise DataError(f"unknown data spec {spec!r}; use one of {forms}")
        return cls(kind, location)

    def __str__(self) -> str:
        return self.kind if self.kind == "bundled" else f"{self.kind}:{self.location}"


@dataclasses.dataclass(frozen=True)
class ImageOptions:
    """How images are read, for every source.

    Args:
        image_size: (H, W) or None. Resize every image to H x W pixels (bilinear
            with antialiasing, `tf.image.resize(..., antialias=True)`, rounded back to
            8 bits). None keeps the source's size: images of different sizes are then
            an error. Defaults to None.
        channels: 1, 3 or None. Convert to grey (ITU-R 601 luma) or RGB (grey
            repeated); an alpha channel is dropped. None keeps 1 channel when every
            image is grey, else 3. Defaults to None.
        skip_bad_images: bool. For `images:DIR`: skip files that cannot be decoded
            (and count them) instead of failing on the first. Defaults to False.
    """

    image_size: tuple[int, int] | None = None
    channels: int | None = None
    skip_bad_images: bool = False

    def __post_init__(self):
        if self.image_size is not None:
            size = tuple(self.image_size)
            if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
                raise DataError(f"image_size must be two positive integers H,W, got {self.image_size!r}")
            object.__setattr__(self, "image_size", size)
        if self.channels not in (None, 1, 3):
            raise DataError(f"channels must be 1 (grey) or 3 (RGB), got {self.channels!r}")

    @classmethod
    def of(cls, train_config) -> ImageOptions:
        """The options of a `TrainConfig` (its image_size, channels, skip_bad_images)."""
        t = train_config
        return cls(image_size=t.image_size, channels=t.channels, skip_bad_images=t.skip_bad_images)

    @property
    def is_default(self) -> bool:
        return self.image_size is None and self.channels is None
