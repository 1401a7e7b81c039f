#!/usr/bin/env python3
"""Writes the dequantization test vectors under tests/data/gguf_quants/.

For each ggml type: a few random blocks (random bytes, with every f16 scale
field replaced by a random *finite* f16 so that no NaN or infinity can appear)
and the f32 values the `gguf` Python package (llama.cpp's gguf-py, an
implementation independent of moepack's C code) dequantizes them to.

File layout, little-endian:
  "MPQV"  u32 type id  u32 n_blocks  u32 block_size  u32 type_size
  n_blocks * type_size bytes of blocks
  n_blocks * block_size f32 expected values

Run:  python3 tests/data/gen_gguf_quant_vectors.py   (needs numpy and gguf)
The outputs are committed, so building and testing never need Python.
"""
import os
import struct
import sys

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as T
from gguf.quants import dequantize

# byte offsets of the f16 scale fields inside one block
F16_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
    T.IQ4_NL: [0], T.IQ4_XS: [0], T.TQ1_0: [52], T.TQ2_0: [64], T.MXFP4: [],
    T.IQ2_XXS: [0], T.IQ2_XS: [0], T.IQ2_S: [0], T.IQ3_XXS: [0], T.IQ3_S: [0], T.IQ1_S: [0],
    T.IQ1_M: [],  # its f16 scale is spread over four nibbles: see make_blocks
}
N_BLOCKS = 12


def random_finite_f16(rng, n):
    """Random half-precision bit patterns, all finite (any sign, subnormals included)."""
    bits = rng.integers(0, 1 << 16, size=n, dtype=np.uint32).astype(np.uint16)
    bad = (bits & 0x7C00) == 0x7C00
    while bad.any():
        bits[bad] = rng.integers(0, 1 << 16, size=int(bad.sum()), dtype=np.uint32).astype(np.uint16)
        bad = (bits & 0x7C00) == 0x7C00
    return bits


def make_blocks(rng, qtype):
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    if qtype == T.F32:
        vals = (rng.standard_normal(N_BLOCKS * 32) * 10.0 ** rng.uniform(-6, 6, N_BLOCKS * 32)).astype(np.float32)
        return vals.view(np.uint8).copy(), N_BLOCKS * 32
    if qtype == T.F16:
        return random_finite_f16(rng, N_BLOCKS * 32).view(np.uint8).copy(), N_BLOCKS * 32
    if qtype == T.BF16:
        bits = rng.integers(0, 1 << 16, size=N_BLOCKS * 32, dtype=np.uint32).astype(np.uint16)
        bits[(bits & 0x7F80) == 0x7F80] &= 0xBFFF  # clear one exponent bit: finite
        return bits.view(np.uint8).copy(), N_BLOCKS * 32
    raw = rng.integers(0, 256, size=(N_BLOCKS, type_size), dtype=np.uint32).astype(np.uint8)
    for off in F16_FIELDS[qtype]:
        raw[:, off:off + 2] = random_finite_f16(rng, N_BLOCKS).view(np.uint8).reshape(N_BLOCKS, 2)
    if qtype == T.IQ1_M:
        # the top nibbles of the four u16 at bytes 48..55 hold the f16 d (nibble k = bits 4k..4k+3)
        d = random_finite_f16(rng, N_BLOCKS).astype(np.uint16)
        sc = raw[:, 48:56].copy().view(np.uint16)
        for k in range(4):
            sc[:, k] = (sc[:, k] & 0x0FFF) | (((d >> (4 * k)) & 0xF) << 12)
        raw[:, 48:56] = sc.view(np.uint8)
    return raw.reshape(-1), N_BLOCKS


def main():
    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gguf_quants")
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(20250611)
    types = [T.F32, T.F16, T.BF16] + list(F16_FIELDS)
    for qtype in types:
        block_size, type_size = GGML_QUANT_SIZES[qtype]
        raw, n_blocks = make_blocks(rng, qtype)
        expected = dequantize(raw, qtype).astype(np.float32, copy=False).reshape(-1)
        assert expected.size == n_blocks * block_size
        assert np.isfinite(expected).all(), qtype.name
        path = os.path.join(out_dir, f"{qtype.name}.bin")
        with open(path, "wb") as f:
            f.write(b"MPQV" + struct.pack("<4I", int(qtype), n_blocks, block_size, type_size))
            f.write(raw.tobytes())
            f.write(expected.astype("<f4").tobytes())
        print(f"{path}: {n_blocks} blocks, {os.path.getsize(path)} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
