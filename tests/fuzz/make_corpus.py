#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_buffers into tests/fuzz/corpus/fuzz_buffers/ (one file per seed).

Each seed is one call in the input layout that fuzz_buffers.cpp documents above read_case: a flags byte,
the count mode and count, the length mode and length, the ending and its bytes seed, then patches.
  tests/fuzz/make_corpus.py
"""
import pathlib
import struct

OUT = pathlib.Path(__file__).resolve().parent / "corpus" / "fuzz_buffers"

RECEIVE, NULL_ARRAY, NULL_CALLBACK = 1, 2, 4
STATE = {"open": 0, "never_opened": 1, "closed": 2, "reopened": 3}
FAULT = {"none": 0, "allocation": 1, "create_event": 2, "issue": 3}
COUNT = {"small": 0, "medium": 1, "limit": 2, "capacity": 3, "any": 4, "zero": 5}
LENGTH = {"any": 0, "near_sum_max": 1, "small": 2, "near_max": 3}
ENDING = {"exact": 0, "fewer": 1, "more": 2, "nothing": 3, "error": 4, "close": 5}
PATCH = {"null": 0, "zero": 1, "set": 2, "add": 3}


def seed(flags=0, state="open", fault="none", count_mode="small", count=3, length_mode="small", length=99,
         ending="exact", bytes_seed=0, patches=()):
    data = bytes([flags | STATE[state] << 3 | FAULT[fault] << 5, COUNT[count_mode]])
    data += struct.pack("<I", count & 0xFFFFFFFF)
    data += bytes([LENGTH[length_mode]]) + struct.pack("<I", length & 0xFFFFFFFF)
    data += bytes([ENDING[ending]]) + struct.pack("<I", bytes_seed)
    for kind, index, value in patches:
        data += bytes([PATCH[kind]]) + struct.pack("<II", index, value & 0xFFFFFFFF)
    return data


SEEDS = {
    "send_ok": seed(),
    "receive_ok_fewer": seed(RECEIVE, ending="fewer", bytes_seed=7),
    "receive_more_than_buffers": seed(RECEIVE, ending="more", bytes_seed=1),
    "receive_end_of_stream": seed(RECEIVE, ending="nothing"),
    "send_short": seed(ending="fewer", bytes_seed=5),
    "send_error": seed(ending="error"),
    "receive_cancelled_by_close": seed(RECEIVE, ending="close"),
    "send_null_buffer": seed(count=4, patches=[("null", 2, 0)]),
    "receive_zero_length": seed(RECEIVE, count=4, patches=[("zero", 0, 0)]),
    "send_sum_is_uint32_max": seed(count_mode="small", count=3, length_mode="near_sum_max", length=0),
    "send_sum_over_uint32_max": seed(count=3, length_mode="near_sum_max", length=0, patches=[("add", 0, 1)]),
    "receive_two_huge_lengths": seed(RECEIVE, count=2, length_mode="near_max", length=0),
    "send_context_at_limit": seed(count_mode="limit", count=0, length_mode="small", length=0),
    "send_context_below_limit": seed(count_mode="limit", count=0xFF, length_mode="small", length=0),
    "receive_context_over_limit": seed(RECEIVE, count_mode="limit", count=5, length_mode="small", length=0),
    "send_huge_count_null_array": seed(NULL_ARRAY, count_mode="any", count=0xFFFFFFFF),
    "send_zero_count": seed(count_mode="zero"),
    "receive_null_callback": seed(RECEIVE | NULL_CALLBACK),
    "send_closed": seed(state="closed"),
    "receive_never_opened": seed(RECEIVE, state="never_opened"),
    "send_reopened": seed(state="reopened"),
    "send_allocation_fails": seed(fault="allocation"),
    "receive_create_event_fails": seed(RECEIVE, fault="create_event"),
    "send_wsasend_fails": seed(fault="issue"),
    "receive_wsarecv_fails": seed(RECEIVE, fault="issue", count=16),
    "receive_half_a_million_buffers": seed(RECEIVE, count_mode="capacity", count=500000, length_mode="small",
                                           length=0, patches=[("null", 499999, 0)]),
    "send_many_buffers": seed(count_mode="medium", count=400, length_mode="small", length=3),
}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for name, data in SEEDS.items():
        (OUT / name).write_bytes(data)
    print(f"make_corpus: {len(SEEDS)} seeds in {OUT}")


if __name__ == "__main__":
    main()
