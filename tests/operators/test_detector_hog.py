"""HOG people detector on a real vtest.avi frame, upscaled 2x (people there are ~100 px tall).

Drawn and checked by eye on frame 100: at 2x, margins >= 1.5 land on four walkers (two
walking side by side at x 480-550, one at x 580, one at x 340); smaller margins fall on
people half hidden by the sign post and near the van. Unscaled, the 64x128 window is taller
than most walkers and HOG finds fewer of them.
"""

from __future__ import annotations

import av
import numpy as np
import pytest

from operators.base import OperatorContext
from operators.detectors.hog import HOGPeopleDetector
from operators.detectors.nanodet import NanoDetDetector
from streamvision.core.errors import ConfigError
from streamvision.core.frames import FrameBatch
from streamvision.core.lineage import FileKey


@pytest.fixture(scope="module")
def frame100(vtest_path) -> FrameBatch:
    with av.open(str(vtest_path)) as container:
        image = next(f for i, f in enumerate(container.decode(video=0)) if i == 100).to_ndarray(format="rgb24")
    return FrameBatch(keys=[FileKey(str(vtest_path), 100).encode()], cameras=["vtest"], frame_no=np.array([100]),
                      pts=np.array([10.0]), wall_time=np.zeros(1), images=image[None])


def test_hog_finds_people_on_an_upscaled_frame(frame100):
    hog = HOGPeopleDetector(upscale=2.0, score_threshold=1.5)
    hog.setup(OperatorContext(num_threads=2))
    people = hog.process(frame100)
    assert len(people) >= 4 and set(people.labels) == {"person"}
    heights = people.bboxes[:, 3] - people.bboxes[:, 1]
    assert np.all((heights > 60) & (heights < 130))
    # every HOG person is centred inside a person box of the other, independent detector
    nanodet = NanoDetDetector(score_threshold=0.5, classes=["person"])
    nanodet.setup(OperatorContext(num_threads=2))
    reference = nanodet.process(frame100).bboxes
    centres = (people.bboxes[:, :2] + people.bboxes[:, 2:]) / 2
    inside = ((centres[:, None, 0] > reference[None, :, 0]) & (centres[:, None, 0] < reference[None, :, 2])
              & (centres[:, None, 1] > reference[None, :, 1] - 10) & (centres[:, None, 1] < reference[None, :, 3] + 10))
    assert inside.any(1).sum() >= 4
    unscaled = HOGPeopleDetector(upscale=1.0, score_threshold=1.5)
    unscaled.setup(OperatorContext())
    assert len(unscaled.process(frame100)) < len(people)


def test_hog_options_are_validated():
    with pytest.raises(ConfigError, match="upscale"):
        HOGPeopleDetector(upscale=10)
    assert HOGPeopleDetector(whole_frames=True).output_type(None).label_domain == frozenset({"person", ""})
