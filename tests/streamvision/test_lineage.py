"""Lineage keys encode, order and decode; patch ids are deterministic and distinct."""

from __future__ import annotations

import pytest

from streamvision.core.lineage import MAX_PATCH_ID, FileKey, FrameKeyCodec, KafkaKey, id_bytes, id_from_bytes, patch_id


def test_keys_round_trip():
    for key in (FileKey("/videos/a.mp4", 0), FileKey("x", 2**40), KafkaKey("frames", 3, 2**33, 7)):
        assert FrameKeyCodec.decode(key.encode()) == key


def test_encoded_keys_sort_in_numeric_order():
    keys = [FileKey("v.avi", n) for n in (0, 1, 255, 256, 70000)]
    assert sorted(k.encode() for k in keys) == [k.encode() for k in keys]
    offsets = [KafkaKey("t", 0, o, 0) for o in (1, 9, 10, 1_000_000)]
    assert sorted(k.encode() for k in offsets) == [k.encode() for k in offsets]


def test_decode_rejects_garbage():
    with pytest.raises(ValueError, match="not an encoded frame key"):
        FrameKeyCodec.decode(b"Zgarbage")


def test_patch_ids_are_deterministic_and_depend_on_every_input():
    parent = FileKey("v.avi", 5).encode()
    a = patch_id(parent, "whole_frame", 0)
    assert a == patch_id(parent, "whole_frame", 0)
    others = {patch_id(parent, "whole_frame", 1), patch_id(parent, "nanodet", 0),
              patch_id(FileKey("v.avi", 6).encode(), "whole_frame", 0)}
    assert a not in others and len(others) == 3
    assert 1 <= a <= MAX_PATCH_ID


def test_id_bytes_round_trip_and_order():
    ids = [1, 255, 256, MAX_PATCH_ID]
    assert [id_from_bytes(id_bytes(i)) for i in ids] == ids
    assert sorted(id_bytes(i) for i in ids) == [id_bytes(i) for i in ids]
