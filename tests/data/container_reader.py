#!/usr/bin/env python3
"""A second reader of the .moepack container, written from docs/FORMAT.md alone.

It exists to prove the specification is complete: it parses and validates the header, directory,
string table, metadata and tokenizer blob, verifies tensor checksums, and dequantizes every
layout/quant combination into float arrays of the logical shape. Python 3 + numpy; XXH3-64 and
zstd come from the system libraries the project links (libxxhash.so.0, libzstd.so.1).

    container_reader.py FILE                 validate, print a summary
    container_reader.py FILE --json          validate, print header/metadata/tensors as JSON
    container_reader.py FILE --verify        also check every tensor's data checksum
    container_reader.py FILE --dequant       also dequantize every tensor (checks padding is zero)
    container_reader.py FILE --tokenizer     also print the decoded tokenizer as JSON

Exit codes: 0 good, 1 a tensor checksum or padding check failed, 2 the file is not a valid
container (message on stderr), 77 a system library is missing (SKIP).
"""
import ctypes
import ctypes.util
import json
import math
import os
import struct
import sys

import numpy as np

HEADER_REGION = 4096
HEADER_BYTES = 256
DIR_ENTRY = 128
MAGIC = b"MOEPACK\0"

LAYOUTS = {1: "row_major", 2: "heads", 3: "amx_int8", 4: "amx_bf16", 5: "gpu_int4"}
QUANTS = {1: "f32", 2: "bf16", 3: "f16", 4: "int8", 5: "int4_sym", 6: "int4_asym"}
SECTIONS = ("host", "gpu", "cpu")
SECTION_ALIGN = (4096, 4096, 2 << 20)
ELEM_SIZE = {1: 4, 2: 2, 3: 2}
# Role ids and role names of FORMAT.md §4 (the names inspect and quant_report use); 12-14 are
# source-only and never stored.
ROLES = {1: "token_embd", 2: "output_norm", 3: "lm_head", 4: "attn_norm", 5: "ffn_norm", 6: "attn_q",
         7: "attn_q_a", 8: "attn_q_a_norm", 9: "attn_q_b", 10: "attn_kv_a_mqa", 11: "attn_kv_a_norm",
         15: "attn_output", 16: "ffn_gate", 17: "ffn_up", 18: "ffn_down", 19: "router", 20: "router_bias",
         21: "exp_gate", 22: "exp_up", 23: "exp_down", 24: "shexp_gate", 25: "shexp_up", 26: "shexp_down",
         27: "mtp_embed", 28: "mtp_enorm", 29: "mtp_hnorm", 30: "mtp_eh_proj", 31: "mtp_head_norm",
         32: "mtp_head", 33: "w_uk", 34: "w_uv"}
ROUTED_EXPERT_ROLES = (21, 22, 23)
# Which element types each layout may hold (FORMAT.md §7).
LAYOUT_QUANTS = {1: (1, 2, 3), 2: (1, 2, 3), 3: (4,), 4: (2,), 5: (5, 6)}
INT4_GROUP = 128

# Tokenizer blob caps (FORMAT.md §6.1).
TOK_MAX_TOKENS = 1 << 22
TOK_MAX_MERGES = 1 << 22
TOK_MAX_REGEXES = 256
TOK_MAX_TEXT = 1 << 26
TOK_MAX_NAME = 256
TOK_MAX_TEMPLATE = 1 << 22
TOK_MAX_REGEX_BYTES = 1 << 24
TOK_HEADER = 64
# Header caps (FORMAT.md §2): checked before anything is allocated.
MAX_TENSORS = 1 << 24
MAX_META = 256 << 20
MAX_TOK_RAW = 1 << 30
TOKEN_TYPES = {1: "normal", 2: "unknown", 3: "control", 4: "user_defined", 5: "unused", 6: "byte"}


class FormatError(Exception):
    """The file is not a valid container; the message names the region or tensor and the problem."""


class Skip(Exception):
    pass


def round_up(a, b):
    return (a + b - 1) // b * b


# ---------------------------------------------------------------- system libraries (ctypes)

class Native:
    def __init__(self):
        try:
            self.xxh = ctypes.CDLL("libxxhash.so.0")
        except OSError as e:
            raise Skip("libxxhash.so.0 not loadable (%s)" % e)
        try:
            self.zstd = ctypes.CDLL("libzstd.so.1")
        except OSError as e:
            raise Skip("libzstd.so.1 not loadable (%s)" % e)
        x = self.xxh
        x.XXH3_64bits.restype = ctypes.c_uint64
        x.XXH3_64bits.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        x.XXH3_createState.restype = ctypes.c_void_p
        x.XXH3_freeState.argtypes = [ctypes.c_void_p]
        x.XXH3_64bits_reset.argtypes = [ctypes.c_void_p]
        x.XXH3_64bits_update.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
        x.XXH3_64bits_digest.restype = ctypes.c_uint64
        x.XXH3_64bits_digest.argtypes = [ctypes.c_void_p]
        z = self.zstd
        z.ZSTD_getFrameContentSize.restype = ctypes.c_ulonglong
        z.ZSTD_getFrameContentSize.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        z.ZSTD_findFrameCompressedSize.restype = ctypes.c_size_t
        z.ZSTD_findFrameCompressedSize.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        z.ZSTD_decompress.restype = ctypes.c_size_t
        z.ZSTD_decompress.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t]
        z.ZSTD_isError.restype = ctypes.c_uint
        z.ZSTD_isError.argtypes = [ctypes.c_size_t]

    @staticmethod
    def _ptr(arr):
        return arr.ctypes.data if arr.size else None

    def xxh3(self, *parts):
        """XXH3-64, seed 0, of the uint8 arrays in `parts` concatenated."""
        parts = [np.ascontiguousarray(p, dtype=np.uint8) for p in parts]
        if len(parts) == 1:
            return self.xxh.XXH3_64bits(self._ptr(parts[0]), parts[0].size)
        state = self.xxh.XXH3_createState()
        if not state:
            raise MemoryError("XXH3_createState")
        try:
            self.xxh.XXH3_64bits_reset(state)
            for p in parts:
                self.xxh.XXH3_64bits_update(state, self._ptr(p), p.size)
            return self.xxh.XXH3_64bits_digest(state)
        finally:
            self.xxh.XXH3_freeState(state)

    def zstd_decompress(self, src, want_size, what):
        src = np.ascontiguousarray(src, dtype=np.uint8)
        z = self.zstd
        content = z.ZSTD_getFrameContentSize(self._ptr(src), src.size)
        if content >= 0xFFFFFFFFFFFFFFFE:  # ZSTD_CONTENTSIZE_UNKNOWN (-1) or _ERROR (-2)
            raise FormatError("%s: not a zstd frame with a recorded content size" % what)
        if content != want_size:
            raise FormatError("%s: zstd frame content size %d, header says %d" % (what, content, want_size))
        frame = z.ZSTD_findFrameCompressedSize(self._ptr(src), src.size)
        if z.ZSTD_isError(frame) or frame != src.size:
            raise FormatError("%s: the region is not exactly one zstd frame" % what)
        dst = np.empty(max(want_size, 1), dtype=np.uint8)
        got = z.ZSTD_decompress(dst.ctypes.data, want_size, self._ptr(src), src.size)
        if z.ZSTD_isError(got) or got != want_size:
            raise FormatError("%s: zstd decompression failed or gave %d bytes, want %d" % (what, got, want_size))
        return dst[:want_size]


# ---------------------------------------------------------------- the container

HEADER_FMT = "<8sIIQQQQQQQQQQQ3Q3QQQQ72sQ"
assert struct.calcsize(HEADER_FMT) == HEADER_BYTES


class Tensor:
    __slots__ = ("index", "name", "role", "layout", "quant", "section", "ndim", "layer", "expert",
                 "group_width", "flags", "shape", "padded", "data_offset", "data_size", "scale_offset",
                 "scale_size", "checksum")

    def logical_shape(self):
        return tuple(self.shape[:self.ndim])

    def describe(self):
        return {"name": self.name, "role": ROLES[self.role], "role_id": self.role,
                "layout": LAYOUTS[self.layout], "quant": QUANTS[self.quant],
                "section": SECTIONS[self.section], "layer": self.layer, "expert": self.expert,
                "group_width": self.group_width, "shape": list(self.shape[:self.ndim]),
                "padded": list(self.padded[:self.ndim]), "data_offset": self.data_offset,
                "data_size": self.data_size, "scale_offset": self.scale_offset,
                "scale_size": self.scale_size, "checksum": "%016x" % self.checksum}


def expected_geometry(t):
    """(padded dims, data_size, scale_size) from layout, quant, shape, group_width (FORMAT.md §7)."""
    shape = t.shape[:t.ndim]
    if t.layout in (1, 2):
        if (t.layout == 2 and t.ndim != 3) or (t.layout == 1 and t.ndim > 2):
            raise FormatError("tensor %s: %s layout with %d dims (row_major has 1 or 2, heads 3)"
                              % (t.name, LAYOUTS[t.layout], t.ndim))
        if t.group_width != 0:
            raise FormatError("tensor %s: group_width %d, must be 0 for %s" % (t.name, t.group_width, LAYOUTS[t.layout]))
        return list(shape), math.prod(shape) * ELEM_SIZE[t.quant], 0
    if t.ndim != 2:
        raise FormatError("tensor %s: layout %s needs 2 dims, has %d" % (t.name, LAYOUTS[t.layout], t.ndim))
    n, k = shape
    np_ = round_up(n, 16)
    if t.layout == 5:
        if t.group_width != INT4_GROUP:
            raise FormatError("tensor %s: gpu_int4 group_width %d, must be %d" % (t.name, t.group_width, INT4_GROUP))
        kp = round_up(k, INT4_GROUP)
        per_table = np_ * (kp // INT4_GROUP) * 2
        return [np_, kp], np_ * kp // 2, per_table * (2 if t.quant == 6 else 1)
    kg = t.group_width
    unit = 64 if t.layout == 3 else 32
    if kg == 0 or kg % unit:
        raise FormatError("tensor %s: %s group_width %d is not a positive multiple of %d"
                          % (t.name, LAYOUTS[t.layout], kg, unit))
    if t.layout == 3 and min(kg, round_up(k, 64)) > 65536:
        raise FormatError("tensor %s: amx_int8 group wider than 65536" % t.name)
    # closed form (a hostile K / Kg could ask for billions of groups): Kg per group, the last rounded up
    n_groups = (k + kg - 1) // kg
    kp_total = (n_groups - 1) * kg + round_up(k - (n_groups - 1) * kg, unit)
    if t.layout == 3:
        return [np_, kp_total], np_ * kp_total, 2 * n_groups * np_ * 4  # f32 scale + int32 wsum
    return [np_, kp_total], np_ * kp_total * 2, 0


def amx_groups(k, kg, unit):
    """[(k0, width, Kp_g)] of the K-groups of an amx layout."""
    out = []
    for g in range((k + kg - 1) // kg):
        k0 = g * kg
        w = min(k, k0 + kg) - k0
        out.append((k0, w, round_up(w, unit)))
    return out


class Container:
    def __init__(self, path, native=None):
        self.path = path
        self.native = native or Native()
        self._open()

    def fail(self, msg):
        raise FormatError(msg)

    def _open(self):
        try:
            actual = os.path.getsize(self.path)
            with open(self.path, "rb") as f:
                head = f.read(HEADER_BYTES)
        except OSError as e:
            self.fail("cannot read: %s" % e.strerror)
        if len(head) < len(MAGIC) or head[:8] != MAGIC:
            self.fail("not a moepack container (bad magic)")
        if len(head) < HEADER_BYTES:
            self.fail("truncated: %d bytes, the header alone is %d" % (actual, HEADER_BYTES))
        f = struct.unpack(HEADER_FMT, head)
        (_, self.version_major, self.version_minor, self.file_size, self.n_tensors, dir_off, dir_size,
         str_off, str_size, meta_off, meta_size, tok_off, tok_size, tok_raw) = f[:14]
        self.section_offset = list(f[14:17])
        self.section_size = list(f[17:20])
        dir_ck, meta_ck, tok_ck, reserved, head_ck = f[20:25]
        if self.version_major != 1:
            self.fail("format version %d.%d: this reader reads major version 1 only"
                      % (self.version_major, self.version_minor))
        self.mm = np.memmap(self.path, dtype=np.uint8, mode="r") if actual else np.zeros(0, np.uint8)
        if self.native.xxh3(self.mm[:248]) != head_ck:
            self.fail("header checksum mismatch (bytes 0..247)")
        if self.file_size != actual:
            self.fail("file_size says %d bytes, the file has %d (truncated or extended)" % (self.file_size, actual))
        if self.n_tensors > MAX_TENSORS or dir_size != self.n_tensors * DIR_ENTRY:
            self.fail("dir_size %d != n_tensors %d x %d (or more than %d tensors)"
                      % (dir_size, self.n_tensors, DIR_ENTRY, MAX_TENSORS))
        # Regions: each inside the file, after the header region, in the file-map order (§1).
        regions = [("directory", dir_off, dir_size, 1), ("string table", str_off, str_size, 1)]
        regions += [("%s section" % SECTIONS[i], self.section_offset[i], self.section_size[i], SECTION_ALIGN[i])
                    for i in range(3)]
        regions += [("metadata", meta_off, meta_size, 8), ("tokenizer", tok_off, tok_size, 8)]
        for name, off, size, _ in regions:
            if off < HEADER_REGION or off > actual or size > actual - off:
                self.fail("%s [%d, +%d) lies outside the file (%d bytes) or inside the header region"
                          % (name, off, size, actual))
        if dir_off != HEADER_REGION:
            self.fail("directory at %d, must be at %d" % (dir_off, HEADER_REGION))
        if not 0 < meta_size <= MAX_META:
            self.fail("metadata size %d not in 1..%d" % (meta_size, MAX_META))
        if tok_raw > MAX_TOK_RAW:
            self.fail("tokenizer: tok_raw_size %d exceeds %d" % (tok_raw, MAX_TOK_RAW))
        prev_end, prev_name = HEADER_REGION, "header"
        for name, off, size, align in regions:
            if off < prev_end:
                self.fail("%s at %d overlaps or precedes the %s (ends at %d)" % (name, off, prev_name, prev_end))
            if off % align or (align > 8 and size % align):
                self.fail("%s [%d, +%d) is not aligned to %d" % (name, off, size, align))
            prev_end, prev_name = off + size, name
        if self.native.xxh3(self.mm[dir_off:dir_off + dir_size], self.mm[str_off:str_off + str_size]) != dir_ck:
            self.fail("directory checksum mismatch (directory + string table)")
        if self.native.xxh3(self.mm[meta_off:meta_off + meta_size]) != meta_ck:
            self.fail("metadata checksum mismatch")
        if self.native.xxh3(self.mm[tok_off:tok_off + tok_size]) != tok_ck:
            self.fail("tokenizer checksum mismatch")
        # reserved bytes (176..247) are ignored: a later minor version may use them (FORMAT.md §2)
        del reserved
        self.header = {"version": "%d.%d" % (self.version_major, self.version_minor), "file_size": self.file_size,
                       "n_tensors": self.n_tensors, "dir_offset": dir_off, "dir_size": dir_size,
                       "strings_offset": str_off, "strings_size": str_size, "meta_offset": meta_off,
                       "meta_size": meta_size, "tok_offset": tok_off, "tok_size": tok_size,
                       "tok_raw_size": tok_raw,
                       "sections": {SECTIONS[i]: {"offset": self.section_offset[i], "size": self.section_size[i]}
                                    for i in range(3)}}
        self.strings = bytes(self.mm[str_off:str_off + str_size])
        self._read_directory(dir_off)
        self._read_metadata(meta_off, meta_size)
        self.tok_offset, self.tok_size, self.tok_raw_size = tok_off, tok_size, tok_raw
        self.tokenizer = None

    def _read_directory(self, dir_off):
        raw = bytes(self.mm[dir_off:dir_off + self.n_tensors * DIR_ENTRY])
        self.tensors = []
        names = set()
        for i in range(self.n_tensors):
            e = raw[i * DIR_ENTRY:(i + 1) * DIR_ENTRY]
            t = Tensor()
            t.index = i
            (name_off, name_len, t.role, t.layout, t.quant, t.section, t.ndim, t.layer, t.expert,
             t.group_width, t.flags) = struct.unpack_from("<IIHHHBBiiII", e, 0)
            t.shape = list(struct.unpack_from("<3Q", e, 32))
            t.padded = list(struct.unpack_from("<3Q", e, 56))
            (t.data_offset, t.data_size, t.scale_offset, t.scale_size, t.checksum,
             reserved) = struct.unpack_from("<6Q", e, 80)
            where = "directory entry %d" % i
            if name_len == 0 or name_off + name_len >= len(self.strings) or self.strings[name_off + name_len] != 0:
                self.fail("%s: name [%d, +%d) is not a NUL-terminated string inside the string table"
                          % (where, name_off, name_len))
            nb = self.strings[name_off:name_off + name_len]
            if 0 in nb:
                self.fail("%s: name contains a NUL byte" % where)
            try:
                t.name = nb.decode("utf-8")
            except UnicodeDecodeError:
                self.fail("%s: name is not UTF-8" % where)
            where = "tensor %s" % t.name
            if t.name in names:
                self.fail("%s: name appears twice in the directory" % where)
            names.add(t.name)
            if t.role not in ROLES:
                self.fail("%s: unknown role %d" % (where, t.role))
            if t.layout not in LAYOUTS:
                self.fail("%s: unknown layout %d" % (where, t.layout))
            if t.quant not in QUANTS:
                self.fail("%s: unknown quant %d" % (where, t.quant))
            if t.quant not in LAYOUT_QUANTS[t.layout]:
                self.fail("%s: layout %s cannot hold quant %s" % (where, LAYOUTS[t.layout], QUANTS[t.quant]))
            if t.section > 2:
                self.fail("%s: unknown section %d" % (where, t.section))
            if not 1 <= t.ndim <= 3:
                self.fail("%s: ndim %d not in 1..3" % (where, t.ndim))
            del reserved  # flags and reserved are ignored, as the header's reserved bytes
            if any(t.shape[t.ndim:]) or any(t.padded[t.ndim:]) or not all(t.shape[:t.ndim]):
                self.fail("%s: shape %s / padded %s have zero used dims or non-zero unused dims"
                          % (where, t.shape, t.padded))
            if t.layer < -1 or (t.expert != -1 and (t.role not in ROUTED_EXPERT_ROLES or t.expert < 0)) \
                    or (t.role in ROUTED_EXPERT_ROLES and t.expert < 0):
                self.fail("%s: layer %d / expert %d invalid for role %s" % (where, t.layer, t.expert, ROLES[t.role]))
            if max(t.shape) > 1 << 40:
                self.fail("%s: shape %s is absurd" % (where, t.shape[:t.ndim]))
            padded, data_size, scale_size = expected_geometry(t)
            if t.padded[:t.ndim] != padded or t.data_size != data_size or t.scale_size != scale_size:
                self.fail("%s: padded %s / data_size %d / scale_size %d, the layout implies %s / %d / %d"
                          % (where, t.padded[:t.ndim], t.data_size, t.scale_size, padded, data_size, scale_size))
            s_off, s_size = self.section_offset[t.section], self.section_size[t.section]
            s_end = s_off + s_size
            sec = SECTIONS[t.section]
            if not (s_off <= t.data_offset and t.data_offset + t.data_size <= s_end):
                self.fail("%s: data [%d, +%d) outside the %s section [%d, %d)"
                          % (where, t.data_offset, t.data_size, sec, s_off, s_end))
            data_align = 4096 if t.section == 2 else 256
            if t.data_offset % data_align:
                self.fail("%s: data offset %d not %d-aligned (%s section)" % (where, t.data_offset, data_align, sec))
            if t.scale_size == 0:
                if t.scale_offset != 0:
                    self.fail("%s: scale_offset %d with scale_size 0" % (where, t.scale_offset))
            else:
                if t.scale_offset != round_up(t.data_offset + t.data_size, 64):
                    self.fail("%s: scale region at %d, must start on the next 64-byte boundary after the data (%d)"
                              % (where, t.scale_offset, round_up(t.data_offset + t.data_size, 64)))
                if t.scale_offset + t.scale_size > s_end:
                    self.fail("%s: scale [%d, +%d) outside the %s section" % (where, t.scale_offset, t.scale_size, sec))
            self.tensors.append(t)
        # No two tensors share bytes (each tensor's data, gap and scales form one extent).
        extents = sorted((t.data_offset, (t.scale_offset + t.scale_size) if t.scale_size else t.data_offset + t.data_size,
                          t.name) for t in self.tensors)
        for (a0, a1, an), (b0, b1, bn) in zip(extents, extents[1:]):
            if b0 < a1:
                self.fail("tensors %s and %s overlap" % (an, bn))
        self.by_name = {t.name: t for t in self.tensors}

    def _read_metadata(self, off, size):
        raw = bytes(self.mm[off:off + size])

        def no_duplicates(pairs):
            keys = [k for k, _ in pairs]
            if len(keys) != len(set(keys)):
                raise FormatError("metadata: duplicate JSON key")
            return dict(pairs)
        try:
            self.meta = json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates)
        except UnicodeDecodeError:
            self.fail("metadata: not UTF-8")
        except ValueError as e:
            self.fail("metadata: not valid JSON (%s)" % e)
        if not isinstance(self.meta, dict):
            self.fail("metadata: not a JSON object")
        if self.meta.get("format") != "moepack":
            self.fail("metadata: format is %r, not \"moepack\"" % self.meta.get("format"))
        fv = self.meta.get("format_version")
        if not isinstance(fv, str) or fv.split(".")[0] != "1":
            self.fail("metadata: format_version %r is not 1.x" % fv)
        if not isinstance(self.meta.get("model"), dict):
            self.fail("metadata: no model object")

    # ------------------------------------------------------------ tensor data

    def data(self, t):
        return self.mm[t.data_offset:t.data_offset + t.data_size]

    def scales(self, t):
        return self.mm[t.scale_offset:t.scale_offset + t.scale_size]

    def verify(self, t):
        """True when the tensor's XXH3-64 of data followed by scale bytes matches the directory."""
        return self.native.xxh3(self.data(t), self.scales(t)) == t.checksum

    def dequantize(self, t, check_padding=True):
        """float32 array of the logical shape; with check_padding, FormatError if a padding byte is not 0."""
        shape = t.logical_shape()
        raw = self.data(t)
        if t.layout in (1, 2):
            if t.quant == 1:
                return raw.view("<f4").reshape(shape).astype(np.float32)
            if t.quant == 3:
                return raw.view("<f2").reshape(shape).astype(np.float32)
            return bf16_to_f32(raw.view("<u2")).reshape(shape)
        n, k = shape
        np_ = t.padded[0]
        if t.layout == 5:
            kp = t.padded[1]
            packed = np.asarray(raw).reshape(np_, kp // 2)
            q = np.empty((np_, kp), dtype=np.uint8)
            q[:, 0::2] = packed & 0x0F  # even k in the low nibble
            q[:, 1::2] = packed >> 4
            if check_padding:
                self._zero_padding(t, q, n, k)
            ng = kp // INT4_GROUP
            sc = self.scales(t)
            if check_padding and (np.any(sc[:np_ * ng * 2].view("<u2").reshape(np_, ng)[n:])
                                  or np.any(sc[np_ * ng * 2:].view("<u2").reshape(-1, ng)[n:])):
                raise FormatError("tensor %s: scale or min of a padding row is not 0" % t.name)
            scale = sc[:np_ * ng * 2].view("<f2").reshape(np_, ng)[:n].astype(np.float32)
            qg = q[:n].astype(np.float32).reshape(n, ng, INT4_GROUP)
            if t.quant == 5:
                w = (qg - 8.0) * scale[:, :, None]
            else:
                mins = sc[np_ * ng * 2:].view("<f2").reshape(np_, ng)[:n].astype(np.float32)
                w = qg * scale[:, :, None] + mins[:, :, None]
            return w.reshape(n, kp)[:, :k].copy()
        unit = 64 if t.layout == 3 else 32
        kg = t.group_width
        groups = amx_groups(k, kg, unit)
        vals = raw.view(np.int8) if t.layout == 3 else raw.view("<u2")
        full = np.empty((np_, t.padded[1]), dtype=vals.dtype)
        col = 0
        for g, (k0, w, kpg) in enumerate(groups):
            start = g * np_ * kg  # group g starts at g*Np*Kg elements
            sub = np.asarray(vals[start:start + np_ * kpg])
            # tile (nb, kb) of 16 rows x `unit` k; inside it [r][c][j] holds W[nb*16+c][kb*unit + vnni*r + j]
            vnni = 4 if t.layout == 3 else 2
            sub = sub.reshape(np_ // 16, kpg // unit, 16, 16, vnni).transpose(0, 3, 1, 2, 4).reshape(np_, kpg)
            full[:, col:col + kpg] = sub
            col += kpg
        if check_padding:
            self._zero_padding_groups(t, full, n, groups)
        logical = np.concatenate([full[:n, c0:c0 + w] for c0, w in _group_cols(groups)], axis=1)
        if t.layout == 4:
            return bf16_to_f32(logical)
        ng = len(groups)
        sc = self.scales(t)
        scale = sc[:ng * np_ * 4].view("<f4").reshape(ng, np_)
        wsum = sc[ng * np_ * 4:].view("<i4").reshape(ng, np_)
        out = np.empty((n, k), dtype=np.float32)
        for g, (k0, w, _) in enumerate(groups):
            qg = logical[:, k0:k0 + w].astype(np.int32)
            if check_padding:
                if qg.min(initial=0) < -127:
                    raise FormatError("tensor %s: int8 value -128 outside the symmetric range [-127, 127]" % t.name)
                if not np.array_equal(qg.sum(axis=1), wsum[g, :n]) or np.any(wsum[g, n:]) or np.any(scale[g, n:]):
                    raise FormatError("tensor %s: group %d wsum is not the sum of q (or padding rows not 0)"
                                      % (t.name, g))
            out[:, k0:k0 + w] = qg.astype(np.float32) * scale[g, :n, None]
        return out

    def int4_params(self, t):
        """(q [N, K] uint8, scale [N, K/128 rounded up] f32, min or None) of a gpu_int4 tensor."""
        n, k = t.logical_shape()
        np_, kp = t.padded[:2]
        packed = np.asarray(self.data(t)).reshape(np_, kp // 2)
        q = np.empty((np_, kp), dtype=np.uint8)
        q[:, 0::2] = packed & 0x0F
        q[:, 1::2] = packed >> 4
        ng = kp // INT4_GROUP
        sc = self.scales(t)
        scale = sc[:np_ * ng * 2].view("<f2").reshape(np_, ng).astype(np.float32)[:n]
        mins = sc[np_ * ng * 2:].view("<f2").reshape(np_, ng).astype(np.float32)[:n] if t.quant == 6 else None
        return q[:n, :k], scale, mins

    def amx_int8_scales(self, t):
        """scale f32 [G, N] of an amx_int8 tensor."""
        n, k = t.logical_shape()
        g = len(amx_groups(k, t.group_width, 64))
        return np.asarray(self.scales(t)[:g * t.padded[0] * 4].view("<f4").reshape(g, t.padded[0])[:, :n])

    def _zero_padding(self, t, q, n, k):
        if np.any(q[n:]) or np.any(q[:, k:]):
            raise FormatError("tensor %s: padding nibbles are not zero" % t.name)

    def _zero_padding_groups(self, t, full, n, groups):
        if np.any(full[n:]):
            raise FormatError("tensor %s: padding rows are not zero" % t.name)
        for c0, w, kpg in _padded_cols(groups):
            if np.any(full[:, c0 + w:c0 + kpg]):
                raise FormatError("tensor %s: padding columns are not zero" % t.name)

    # ------------------------------------------------------------ tokenizer

    def read_tokenizer(self):
        if self.tokenizer is None:
            comp = self.mm[self.tok_offset:self.tok_offset + self.tok_size]
            blob = self.native.zstd_decompress(comp, self.tok_raw_size, "tokenizer")
            self.tokenizer = parse_tokenizer_blob(bytes(blob), self.native)
        return self.tokenizer


def _group_cols(groups):
    """(column in the concatenated padded matrix, logical width) of each group."""
    col = 0
    for _, w, kpg in groups:
        yield col, w
        col += kpg


def _padded_cols(groups):
    col = 0
    for _, w, kpg in groups:
        yield col, w, kpg
        col += kpg


def bf16_to_f32(u16):
    return (np.asarray(u16, dtype=np.uint32) << 16).view(np.float32)


# ---------------------------------------------------------------- tokenizer blob (FORMAT.md §6.1)

def byte_level_decoder():
    """GPT-2 byte-level alphabet: code point -> byte."""
    direct = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    others = [b for b in range(256) if b not in direct]
    assert len(others) == 68
    m = {b: b for b in direct}
    for i, b in enumerate(others):
        m[0x100 + i] = b
    return m


def parse_tokenizer_blob(blob, native):
    def bad(msg):
        raise FormatError("tokenizer blob: " + msg)
    if len(blob) < TOK_HEADER + 8:
        bad("%d bytes, shorter than header + trailer" % len(blob))
    (magic, version, hsize, n_tokens, n_merges, n_regexes, flags, bos, eos, unk, text_bytes, name_len,
     template_len, regex_bytes, reserved) = struct.unpack_from("<4sIIIIIIiiiIIIIQ", blob, 0)
    if magic != b"MPTK":
        bad("bad magic %r" % magic)
    if version != 1:
        bad("version %d, this reader reads 1" % version)
    if hsize != TOK_HEADER:
        bad("header size %d, must be %d" % (hsize, TOK_HEADER))
    if reserved or flags & ~0xF:
        bad("reserved field or unknown flag bits set (flags 0x%x)" % flags)
    if not (1 <= n_tokens <= TOK_MAX_TOKENS and n_merges <= TOK_MAX_MERGES and n_regexes <= TOK_MAX_REGEXES
            and text_bytes <= TOK_MAX_TEXT and name_len <= TOK_MAX_NAME and template_len <= TOK_MAX_TEMPLATE
            and regex_bytes <= TOK_MAX_REGEX_BYTES):
        bad("a count exceeds its cap")
    if template_len and not flags & 8:
        bad("chat template present without flag bit 3")
    want = (TOK_HEADER + 5 * n_tokens + text_bytes + 8 * n_merges + 4 * n_regexes + regex_bytes + name_len
            + template_len + 8)
    if len(blob) != want:
        bad("%d bytes, the counts imply %d" % (len(blob), want))
    (trailer,) = struct.unpack_from("<Q", blob, len(blob) - 8)
    if native.xxh3(np.frombuffer(blob, dtype=np.uint8, count=len(blob) - 8)) != trailer:
        bad("checksum mismatch")
    pos = TOK_HEADER
    types = np.frombuffer(blob, dtype=np.uint8, count=n_tokens, offset=pos); pos += n_tokens
    lens = np.frombuffer(blob, dtype="<u4", count=n_tokens, offset=pos); pos += 4 * n_tokens
    if int(lens.sum(dtype=np.uint64)) != text_bytes:
        bad("token lengths sum to %d, text_bytes is %d" % (int(lens.sum(dtype=np.uint64)), text_bytes))
    bad_type = np.flatnonzero((types < 1) | (types > 6))
    if bad_type.size:
        bad("token %d has type %d" % (bad_type[0], types[bad_type[0]]))
    texts = []
    for i, ln in enumerate(lens.tolist()):
        try:
            texts.append(blob[pos:pos + ln].decode("utf-8"))
        except UnicodeDecodeError:
            bad("token %d is not valid UTF-8" % i)
        pos += ln
    merges = np.frombuffer(blob, dtype="<u4", count=2 * n_merges, offset=pos).reshape(n_merges, 2); pos += 8 * n_merges
    if n_merges and int(merges.max()) >= n_tokens:
        bad("a merge names a token id >= n_tokens")
    rlens = np.frombuffer(blob, dtype="<u4", count=n_regexes, offset=pos).tolist(); pos += 4 * n_regexes
    if sum(rlens) != regex_bytes:
        bad("regex lengths sum to %d, regex_bytes is %d" % (sum(rlens), regex_bytes))
    regexes = []
    for ln in rlens:
        try:
            regexes.append(blob[pos:pos + ln].decode("utf-8"))
        except UnicodeDecodeError:
            bad("a regex is not valid UTF-8")
        pos += ln
    try:
        pre_name = blob[pos:pos + name_len].decode("utf-8"); pos += name_len
        template = blob[pos:pos + template_len].decode("utf-8"); pos += template_len
    except UnicodeDecodeError:
        bad("pre-tokenizer name or chat template is not valid UTF-8")
    if not regexes and pre_name != "none":
        bad("no regexes but the pre-tokenizer name is %r, not \"none\"" % pre_name)
    for what, tid in (("bos", bos), ("eos", eos), ("unk", unk)):
        if tid < -1 or tid >= n_tokens:
            bad("%s id %d out of range" % (what, tid))
    if flags & 1 and bos < 0:
        bad("add_bos without a BOS token")
    # Build rules of docs/TOKENIZER.md §1 that need no regex engine.
    normal = {}
    added = set()
    for i, (ty, tx) in enumerate(zip(types.tolist(), texts)):
        if ty == 1:
            if tx in normal:
                bad("two NORMAL tokens with the text %r" % tx)
            normal[tx] = i
        elif ty in (2, 3, 4):
            if tx in added:
                bad("two added tokens with the text %r" % tx)
            added.add(tx)
    seen = set()
    for r, (a, b) in enumerate(merges.tolist()):
        if types[a] != 1 or types[b] != 1 or texts[a] + texts[b] not in normal:
            bad("merge %d (%d, %d): not two NORMAL tokens whose concatenation is a NORMAL token" % (r, a, b))
        if (a, b) in seen:
            bad("merge %d repeats the pair (%d, %d)" % (r, a, b))
        seen.add((a, b))
    alphabet = byte_level_decoder()

    def token_bytes(i):
        ty, tx = int(types[i]), texts[i]
        if ty == 1:
            if all(ord(ch) in alphabet for ch in tx):
                return bytes(alphabet[ord(ch)] for ch in tx)
            return tx.encode("utf-8")
        if ty == 6 and len(tx) == 6 and tx.startswith("<0x") and tx.endswith(">"):
            try:
                return bytes([int(tx[3:5], 16)])
            except ValueError:
                return tx.encode("utf-8")
        if ty == 5:
            return b""
        return tx.encode("utf-8")
    return {"n_tokens": n_tokens, "n_merges": n_merges, "flags": flags, "add_bos": bool(flags & 1),
            "add_eos": bool(flags & 2), "ignore_merges": bool(flags & 4), "bos_id": bos, "eos_id": eos,
            "unk_id": unk, "types": [TOKEN_TYPES[x] for x in types.tolist()], "tokens": texts,
            "token_bytes": token_bytes, "merges": merges.tolist(), "regexes": regexes, "pre_name": pre_name,
            "chat_template": template if flags & 8 else None}


# ---------------------------------------------------------------- command line

def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    opts = {a for a in argv[1:] if a.startswith("--")}
    known = {"--json", "--verify", "--dequant", "--tokenizer"}
    if len(args) != 1 or opts - known:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    path = args[0]
    try:
        native = Native()
    except Skip as e:
        print("SKIP: %s" % e)
        return 77
    rc = 0
    try:
        c = Container(path, native)
        tok = c.read_tokenizer()
        bad = []
        if "--verify" in opts:
            bad = [t.name for t in c.tensors if not c.verify(t)]
            for name in bad:
                print("%s: tensor %s: checksum mismatch" % (path, name), file=sys.stderr)
        if "--dequant" in opts:
            for t in c.tensors:
                if t.name in bad:
                    continue
                w = c.dequantize(t)
                if not np.all(np.isfinite(w)):
                    print("%s: tensor %s: non-finite values" % (path, t.name), file=sys.stderr)
                    bad.append(t.name)
        if bad:
            rc = 1
        if "--json" in opts:
            out = {"file": path, "header": c.header, "metadata": c.meta,
                   "tokenizer": {"n_tokens": tok["n_tokens"], "n_merges": tok["n_merges"]},
                   "tensors": [t.describe() for t in c.tensors]}
            if "--verify" in opts:
                out["checksum_failures"] = bad
            json.dump(out, sys.stdout, indent=1)
            print()
        elif "--tokenizer" in opts:
            tok = dict(tok)
            tok.pop("token_bytes")
            json.dump(tok, sys.stdout, ensure_ascii=False)
            print()
        else:
            print("%s: moepack %s, %d tensors, %d bytes, tokenizer %d tokens / %d merges%s"
                  % (path, c.header["version"], len(c.tensors), c.file_size, tok["n_tokens"], tok["n_merges"],
                     "" if not ({"--verify", "--dequant"} & opts) else
                     (", %d bad tensor(s)" % len(bad) if bad else ", all tensors good")))
    except FormatError as e:
        print("%s: %s" % (path, e), file=sys.stderr)
        return 2
    except MemoryError:
        print("%s: out of memory" % path, file=sys.stderr)
        return 2
    return rc


if __name__ == "__main__":
    import signal
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `... | head` ends quietly
    sys.exit(main(sys.argv))
