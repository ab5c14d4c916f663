import json

import numpy as np
import pytest

from streammix.core.interleave import skip_greedy, skip_random
from streammix.core.schedule import Schedule, Segment, check_aligned, normalize_weights


def test_initial_normalizes():
    s = Schedule.initial([1, 3])
    assert s.segments == (Segment(start=0, weights=(0.25, 0.75), cursors=(0, 0)),)
    assert s.num_domains == 2


def test_append_replays_the_last_segment():
    s = Schedule.initial([1, 2, 0]).append(100, [0, 1, 1]).append(250, [2, 1, 1])
    first = skip_greedy([1 / 3, 2 / 3], 0, [0, 0], 100)
    assert s.segments[1].cursors == (int(first[0]), int(first[1]), 0)
    second = skip_greedy([0.5, 0.5], 0, [0, 0], 150)
    assert s.segments[2].cursors == (int(first[0]), int(first[1] + second[0]), int(second[1]))
    assert sum(s.segments[2].cursors) == 250


def test_append_random_uses_seed_and_segment_index():
    s = Schedule.initial([1, 1]).append(64, [1, 3]).append(192, [1, 1], interleave="random", seed=9)
    first = s.segments[1].cursors
    counts = skip_random(
        [0.25, 0.75], seed=9, segment_index=1, first_position=64, counts=[0, 0], n=128
    )
    assert s.segments[2].cursors == tuple(int(a + b) for a, b in zip(first, counts))
    with pytest.raises(ValueError, match="seed"):
        Schedule.initial([1, 1]).append(10, [1, 1], interleave="random")


def test_append_at_same_start_replaces_weights():
    s = Schedule.initial([1, 1]).append(64, [1, 3])
    t = s.append(64, [3, 1])
    assert len(t.segments) == 2
    assert t.segments[1].weights == (0.75, 0.25)
    assert t.segments[1].cursors == s.segments[1].cursors
    assert Schedule.initial([1, 1]).append(0, [1, 0]).segments == (
        Segment(start=0, weights=(1.0, 0.0), cursors=(0, 0)),
    )


def test_segment_index_at():
    s = Schedule.initial([1, 1]).append(10, [1, 2]).append(30, [2, 1])
    assert [s.segment_index_at(p) for p in (0, 9, 10, 29, 30, 10**12)] == [0, 0, 1, 1, 2, 2]
    assert s.segment_end(0) == 10 and s.segment_end(2) is None
    with pytest.raises(ValueError, match="position"):
        s.segment_index_at(-1)


def test_state_round_trips_through_json():
    s = Schedule.initial([0.1, 0.2, 0.7]).append(1000, [1 / 3, 1 / 3, 1 / 3])
    restored = Schedule.from_state(json.loads(json.dumps(s.to_state())))
    assert restored == s
    with pytest.raises(ValueError, match="not a schedule"):
        Schedule.from_state({"segments": [{"start": 0}]})


@pytest.mark.parametrize(
    ("weights", "message"),
    [([], "empty"), ([1, -1], ">= 0"), ([0, 0], "positive"), ([1, float("nan")], "finite"),
     ([1, float("inf")], "finite")],
)  # fmt: skip
def test_weight_validation(weights, message):
    with pytest.raises(ValueError, match=message):
        normalize_weights(weights)
    with pytest.raises(ValueError, match=message):
        Schedule.initial(weights)


def test_structural_validation():
    s = Schedule.initial([1, 1]).append(10, [1, 2])
    with pytest.raises(ValueError, match="expected 2 weights"):
        s.append(20, [1, 1, 1])
    with pytest.raises(ValueError, match="before the last start"):
        s.append(5, [1, 1])
    with pytest.raises(ValueError, match="interleave"):
        s.append(20, [1, 1], interleave="zigzag")
    with pytest.raises(TypeError, match="sequence of numbers"):
        normalize_weights(3)
    with pytest.raises(ValueError, match="at least one segment"):
        Schedule(())
    with pytest.raises(ValueError, match="position 0"):
        Schedule((Segment(start=5, weights=(1.0,), cursors=(0,)),))
    seg = Segment(start=0, weights=(1.0,), cursors=(0,))
    with pytest.raises(ValueError, match="increase"):
        Schedule((seg, seg))
    with pytest.raises(ValueError, match="one cursor per weight"):
        Segment(start=0, weights=(1.0,), cursors=(0, 0))


def test_check_aligned():
    s = Schedule.initial([1, 1]).append(64, [1, 2])
    check_aligned(s, 32)
    with pytest.raises(ValueError, match="not multiples"):
        check_aligned(s, 48)
    with pytest.raises(ValueError, match="global_batch_size"):
        check_aligned(s, 0)


def test_cursors_of_large_segment_use_skip_ahead_and_match_replay():
    s = Schedule.initial([0.6, 0.3, 0.1]).append(2_000_000, [1, 1, 1])
    replay = skip_greedy(np.array([0.6, 0.3, 0.1]), 0, np.zeros(3, np.int64), 2_000_000)
    assert s.segments[1].cursors == tuple(int(c) for c in replay)
