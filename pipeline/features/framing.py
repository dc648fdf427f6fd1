"""Where a window's frames come from: the window's own samples plus context on each side.

A model scores windows of `window` samples. Its frontend frames are centred on the window's
samples t * hop (t = 0 .. frames - 1, librosa's center=True convention), but a frame near the
window's edge reaches beyond it: the model takes the window with `context_samples` of real
audio on each side, never zero padding, so that a window cut from a long recording (detection,
where the audio around it is known) gives exactly the frames it gave in training. Beyond the
frontend's half window, the context holds

- `warmup_frames`: frames computed and then dropped, that let PCEN's smoother (an exponential
  moving average) forget its start, as it has in a continuous recording;
- `trunk_context_frames`: frames the network's convolutional trunk sees on each side and pools
  only the window's own columns from (models.backbones.registry): the trunk then computes, at
  the window's columns, what it computes over a whole chunk of a recording, so detection runs
  the trunk once per chunk and pools each window's columns from the shared feature map.

    [ context_samples | window | context_samples ]      the waveform the model takes
      frames: [-warmup - trunk_context, frames + trunk_context + warmup)
      normalised by the statistics of frames [0, frames), passed on: the trunk's frames
"""
from __future__ import annotations

import dataclasses
import math

from pipeline.config import FrontendConfig
from pipeline.features.filters import pcen_smoothing

# PCEN's smoother runs this long before a window's first frame (and so after its last, for
# symmetry), until a different start would change it by at most 1% of the difference.
PCEN_SETTLED = 0.01


@dataclasses.dataclass(frozen=True)
class Framing:
    window: int  # samples at the model rate
    hop: int  # frontend hop, samples
    frame_length: int  # samples one frontend frame reads (the FFT length)
    center: bool  # frames centred on t * hop (else starting there)
    warmup_frames: int = 0
    trunk_context_frames: int = 0

    @property
    def frames(self) -> int:
        """Frames of the window itself."""
        if self.center:
            return 1 + self.window // self.hop
        return max(0, 1 + (self.window - self.frame_length) // self.hop)

    @property
    def context_frames(self) -> int:
        return self.warmup_frames + self.trunk_context_frames

    @property
    def trunk_frames(self) -> int:
        """Frames the trunk takes: the window's and its trunk context."""
        return self.frames + 2 * self.trunk_context_frames

    @property
    def context_samples(self) -> int:
        """Samples of real audio the model takes on each side of the window."""
        return self.context_frames * self.hop + (self.frame_length // 2 if self.center else 0)

    @property
    def input_samples(self) -> int:
        return self.window + 2 * self.context_samples

    def frames_of(self, samples: int) -> int:
        """Frames the frontend computes over `samples` input samples (no padding)."""
        return max(0, 1 + (samples - self.frame_length) // self.hop)


def pcen_warmup_frames(cfg: FrontendConfig, sample_rate_hz: int) -> int:
    """Frames after which PCEN's smoother has forgotten its start to PCEN_SETTLED (0 for the
    other kinds, which look at one frame at a time)."""
    if cfg.kind != "pcen":
        return 0
    return math.ceil(math.log(PCEN_SETTLED) / math.log(1.0 - pcen_smoothing(cfg, sample_rate_hz)))


def legacy_framing(cfg: FrontendConfig, sample_rate_hz: int, window: int) -> Framing:
    """The framing of a model saved before models had one: the window alone, no context
    frames (models.classifier and pipeline.detection.detector read such files)."""
    return Framing(window, cfg.hop_length_samples(sample_rate_hz), cfg.fft_length(sample_rate_hz), cfg.center)


def framing(cfg: FrontendConfig, sample_rate_hz: int, window: int, trunk_context_frames: int = 0) -> Framing:
    """The Framing of windows of `window` samples for a frontend config."""
    return Framing(window, cfg.hop_length_samples(sample_rate_hz), cfg.fft_length(sample_rate_hz), cfg.center,
                   pcen_warmup_frames(cfg, sample_rate_hz), trunk_context_frames)
