import cv2
import numpy as np
import pytest

from bsviz.vision.image import ImageError
from bsviz.vision.video import VideoFrames, smooth


def write_clip(path, n_frames, size, fps=20):
    """A WebM whose frame t is uniformly grey at level 5 t (t < 50), so frames are told apart."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"VP80"), fps, size)
    for t in range(n_frames):
        writer.write(np.full((size[1], size[0], 3), 5 * t, np.uint8))
    writer.release()
    return path


def test_smooth_is_a_moving_average_that_holds_through_gaps():
    x = np.array([[np.nan], [0.0], [np.nan], [1.0], [1.0]], np.float32)
    np.testing.assert_allclose(smooth(x, 0.5)[:, 0], [0, 0, 0, 0.5, 0.75])
    with pytest.raises(ValueError):
        smooth(np.full((3, 2), np.nan))


def test_long_videos_are_evenly_subsampled_and_scaled_down(tmp_path):
    clip = write_clip(tmp_path / "clip.webm", 40, (320, 160))
    frames = VideoFrames(clip, max_frames=10, max_side=160)
    assert (frames.total, frames.stride, frames.fps) == (40, 4, 5.0)
    kept = list(frames)
    assert len(kept) == 10 and kept[0].shape == (80, 160, 3) and kept[0].dtype == np.uint8
    every = list(VideoFrames(clip, max_frames=40, max_side=160))
    assert len(every) == 40
    for frame, same in zip(kept, every[::4]):  # frames 0, 4, 8, ...
        np.testing.assert_array_equal(frame, same)
    assert np.diff([frame.mean() for frame in kept]).min() > 10  # and they differ


def test_unreadable_or_tiny_videos_are_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not a video")
    with pytest.raises(ImageError, match="notes.txt is not a readable video file"):
        VideoFrames(tmp_path / "notes.txt")
    with pytest.raises(ImageError, match="too small"):
        VideoFrames(write_clip(tmp_path / "tiny.webm", 3, (8, 8)))
