#!/usr/bin/env python3
"""Checks for tests/cli/format_reader.sh, built on tests/data/container_reader.py (the second reader):

  container_reader_check.py READER check CONTAINER INSPECT_JSON SOURCE full|structure CASES
  container_reader_check.py READER hostile GOOD_CONTAINER DIR

check: the reader's view of CONTAINER against `moepack inspect --json --tensors` and, with full, every
tensor against the safetensors SOURCE within the bound its quantization allows, the metadata and the
tokenizer; hostile: writes the hostile copies of GOOD_CONTAINER that the test feeds to both readers.
"""
import importlib.util, json, math, os, struct, sys
import numpy as np
spec = importlib.util.spec_from_file_location("container_reader", sys.argv[1])
cr = importlib.util.module_from_spec(spec); spec.loader.exec_module(cr)
mode = sys.argv[2]
problems = []


def problem(msg):
    problems.append(msg)
    print("FAIL: " + msg, file=sys.stderr)


def st_load(folder):
    """Every tensor of a safetensors folder as float32 (BF16, F16, F32 sources)."""
    out = {}
    for f in sorted(os.listdir(folder)):
        if not f.endswith(".safetensors"):
            continue
        buf = open(os.path.join(folder, f), "rb").read()
        (n,) = struct.unpack_from("<Q", buf, 0)
        for name, info in json.loads(buf[8:8 + n]).items():
            if name == "__metadata__":
                continue
            a, b = info["data_offsets"]
            raw = np.frombuffer(buf, dtype=np.uint8, count=b - a, offset=8 + n + a)
            conv = {"BF16": lambda r: (r.view("<u2").astype(np.uint32) << 16).view(np.float32),
                    "F32": lambda r: r.view("<f4"), "F16": lambda r: r.view("<f2").astype(np.float32)}
            out[name] = conv[info["dtype"]](raw).reshape(info["shape"])
    return out


# container name (FORMAT.md §4) -> Hugging Face name suffix under model.layers.L.
LAYER_NAMES = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
               "attn_q": "self_attn.q_proj", "attn_q_a": "self_attn.q_a_proj",
               "attn_q_a_norm": "self_attn.q_a_layernorm", "attn_q_b": "self_attn.q_b_proj",
               "attn_kv_a_mqa": "self_attn.kv_a_proj_with_mqa", "attn_kv_a_norm": "self_attn.kv_a_layernorm",
               "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
               "ffn_down": "mlp.down_proj", "ffn_gate_inp": "mlp.gate", "exp_probs_b": "mlp.gate.e_score_correction_bias",
               "ffn_gate_shexp": "mlp.shared_experts.gate_proj", "ffn_up_shexp": "mlp.shared_experts.up_proj",
               "ffn_down_shexp": "mlp.shared_experts.down_proj", "nextn.embed_tokens": "embed_tokens",
               "nextn.enorm": "enorm", "nextn.hnorm": "hnorm", "nextn.eh_proj": "eh_proj",
               "nextn.shared_head_norm": "shared_head.norm", "nextn.shared_head_head": "shared_head.head"}
GLOBAL_NAMES = {"token_embd": "model.embed_tokens.weight", "output_norm": "model.norm.weight", "output": "lm_head.weight"}


def source_weight(name, W, cfg):
    if name in GLOBAL_NAMES:
        return W[GLOBAL_NAMES[name]]
    parts = name.split(".")
    pre, rest = "model.layers.%s." % parts[1], ".".join(parts[2:])
    for kind in ("gate", "up", "down"):
        if rest.startswith("ffn_%s_exps." % kind):
            return W[pre + "mlp.experts.%s.%s_proj.weight" % (parts[3], kind)]
    if rest in ("attn_w_uk", "attn_w_uv"):
        # kv_b_proj [H*(nope+v), kv_lora]: per head, nope rows of k, then v rows of v
        h, nope, v = cfg["num_attention_heads"], cfg["qk_nope_head_dim"], cfg["v_head_dim"]
        kvb = W[pre + "self_attn.kv_b_proj.weight"].reshape(h, nope + v, -1)
        return kvb[:, :nope, :].transpose(0, 2, 1) if rest == "attn_w_uk" else kvb[:, nope:, :]
    hf = LAYER_NAMES[rest]
    return W[pre + hf + ("" if hf.endswith("bias") else ".weight")]


def check_values(c, W, cfg, minmax):
    """Every tensor against its source, with the bound its scheme implies; recomputes the quant report."""
    report = {}
    for t in c.tensors:
        w = np.asarray(source_weight(t.name, W, cfg), dtype=np.float32)
        if tuple(w.shape) != t.logical_shape():
            problem("%s: shape %s, source %s" % (t.name, t.logical_shape(), w.shape)); continue
        try:
            wh = c.dequantize(t)
        except cr.FormatError as e:
            problem(str(e)); continue
        w64, d = w.astype(np.float64), wh.astype(np.float64) - w.astype(np.float64)
        acc = report.setdefault(cr.ROLES[t.role], [0.0, 0.0, 0, "", -1.0])
        e2, s2 = float((d * d).sum()), float((w64 * w64).sum())
        acc[0] += e2; acc[1] += s2; acc[2] += 1
        rel = math.sqrt(e2 / s2) if s2 else 0.0
        if rel > acc[4]:
            acc[3], acc[4] = t.name, rel
        if t.quant in (1, 2, 3):
            # a float element is the source value rounded to the stored precision (exact for bf16 sources)
            want = {1: w, 2: w, 3: w.astype(np.float16).astype(np.float32)}[t.quant]
            if t.quant == 2:
                want = ((w.view(np.uint32) + 0x7FFF + ((w.view(np.uint32) >> 16) & 1)) >> 16 << 16).view(np.float32)
            if not np.array_equal(wh, want):
                problem("%s (%s %s): %d elements differ from the source"
                        % (t.name, cr.LAYOUTS[t.layout], cr.QUANTS[t.quant], int((wh != want).sum())))
        elif t.quant == 4:
            # FORMAT.md §7.3: symmetric, scale = max|w|/127 per (row, group), q = round(w/scale): |w - q*s| <= s/2
            scale = c.amx_int8_scales(t)
            for g, (k0, width, _) in enumerate(cr.amx_groups(w.shape[1], t.group_width, 64)):
                wg = w[:, k0:k0 + width]
                want_scale = np.abs(wg).max(axis=1) / np.float32(127)  # f32 division, as the doc says
                if not np.array_equal(scale[g], want_scale):
                    problem("%s group %d: scales are not max|w|/127" % (t.name, g))
                bound = scale[g][:, None] * 0.5 * (1 + 2 ** -20) + np.abs(wg) * 2 ** -22
                err = np.abs(d[:, k0:k0 + width])
                if np.any(err > bound):
                    i = np.unravel_index(np.argmax(err - bound), err.shape)
                    problem("%s group %d: |w - q*s| = %.3g > s/2 = %.3g at %s"
                            % (t.name, g, err[i], scale[g][i[0]] / 2, i))
        else:
            # FORMAT.md §7.5: q is chosen against the stored f16 scale (and min), so each element is the
            # level of its group's 16-level grid ((q-8)*s or q*s + min) nearest to w; the slack covers only
            # the f32 rounding of the dequantized value
            q, s, mn = c.int4_params(t)
            n, k = w.shape
            ng = s.shape[1]
            kp = ng * cr.INT4_GROUP
            wpad = np.zeros((n, kp), np.float64); wpad[:, :k] = w
            wg = wpad.reshape(n, ng, cr.INT4_GROUP)
            j = np.arange(16, dtype=np.float64)
            s64 = s.astype(np.float64)[:, :, None]
            base = np.zeros_like(s64) if mn is None else mn.astype(np.float64)[:, :, None]
            levels = (j - 8.0 if mn is None else j) * s64 + base          # [n, ng, 16]
            nearest = np.abs(wg[:, :, :, None] - levels[:, :, None, :]).min(axis=3)
            slack = (16 * np.abs(s64) + np.abs(base)) * 2 ** -23
            err = np.abs(np.pad(d, ((0, 0), (0, kp - k))).reshape(n, ng, cr.INT4_GROUP))
            bound = nearest + slack
            if minmax:  # the minmax grid spans the group's values: nothing clips, |w - w^| <= |s|/2
                bound = np.minimum(bound, np.abs(s64) * 0.5 + slack)
            bound = bound.reshape(n, kp)[:, :k]; err = err.reshape(n, kp)[:, :k]
            if np.any(err > bound):
                i = np.unravel_index(np.argmax(err - bound), err.shape)
                problem("%s (%s): |w - w^| = %.4g exceeds %.4g at %s"
                        % (t.name, cr.QUANTS[t.quant], err[i], bound[i], i))
    qr = c.meta.get("quant_report", {})
    for role, (e2, s2, n, worst, wrel) in report.items():
        want = qr.get(role)
        rel = math.sqrt(e2 / s2) if s2 else 0.0
        if want is None or want["tensors"] != n or abs(want["rms_rel_err"] - rel) > 1e-6 * max(rel, 1e-3) \
                or abs(want["worst_rms_rel_err"] - wrel) > 1e-6 * max(wrel, 1e-3) \
                or (wrel > 0 and want["worst_tensor"] != worst):
            problem("quant_report[%s] = %s, recomputed tensors %d rms_rel_err %.9g worst %s %.9g"
                    % (role, want, n, rel, worst, wrel))


def yarn_mscale(factor, m):
    return 0.1 * m * math.log(factor) + 1.0 if factor > 1 else 1.0


def check_metadata(c, cfg):
    model = c.meta["model"]
    rs = cfg.get("rope_scaling") or {}
    pairs = [(k, v, model.get(k)) for k, v in cfg.items() if k in model and k != "rope_scaling"]
    pairs += [("rope_scaling." + k, v, (model.get("rope_scaling") or {}).get(k)) for k, v in rs.items()
              if k not in ("type", "rope_type")]
    for key, v, mv in pairs:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and key != "rope_theta" \
                and (isinstance(v, float) or not float(v).is_integer() or isinstance(mv, float)):
            v = float(np.float32(v))  # FORMAT.md §5: these are float32 values (rope_theta a double)
        if mv != v:
            problem("metadata model.%s = %r, config.json %r" % (key, mv, v))
    nope, rope = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"]
    scale, attn_factor = (nope + rope) ** -0.5, 1.0
    inv = 1.0 / cfg["rope_theta"] ** (np.arange(0, rope, 2, dtype=np.float64) / rope)
    if rs.get("type", rs.get("rope_type")) == "yarn":
        f, mad, ms = rs["factor"], rs.get("mscale_all_dim"), rs.get("mscale")
        if mad:
            scale *= yarn_mscale(f, mad) ** 2
        attn_factor = yarn_mscale(f, ms) / yarn_mscale(f, mad) if (ms and mad) else yarn_mscale(f, 1)
        base, om = cfg["rope_theta"], rs["original_max_position_embeddings"]

        def corr_dim(rot):
            return rope * math.log(om / (rot * 2 * math.pi)) / (2 * math.log(base))
        lo = max(math.floor(corr_dim(rs.get("beta_fast", 32))), 0)
        hi = min(math.ceil(corr_dim(rs.get("beta_slow", 1))), rope - 1)
        ramp = np.clip((np.arange(rope // 2) - lo) / ((hi - lo) if hi != lo else 0.001), 0, 1)
        inv = inv / f * ramp + inv * (1 - ramp)
    att = c.meta["attention"]
    for key, want in (("softmax_scale", scale), ("rope_attn_factor", attn_factor)):
        if abs(att[key] - want) > abs(want) * 2 ** -23:
            problem("attention.%s = %r, formula gives %r" % (key, att[key], want))
    got = np.array(att["rope_inv_freq"], dtype=np.float64)
    if got.shape != inv.shape or np.any(np.abs(got - inv) > inv * 2 ** -23):
        problem("attention.rope_inv_freq = %s, formula gives %s" % (got.tolist(), inv.tolist()))


def check_tokenizer(c, folder, cases_file):
    tj = json.load(open(os.path.join(folder, "tokenizer.json"), encoding="utf-8"))
    tc = json.load(open(os.path.join(folder, "tokenizer_config.json"), encoding="utf-8"))
    tok = c.read_tokenizer()
    text = {i: s for s, i in tj["model"]["vocab"].items()}
    kind = {i: "normal" for i in text}
    for a in tj.get("added_tokens", []):
        text[a["id"]] = a["content"]; kind[a["id"]] = "control" if a.get("special") else "user_defined"
    n = max(text) + 1
    if tok["n_tokens"] != n:
        problem("tokenizer: %d tokens, tokenizer.json has %d" % (tok["n_tokens"], n))
    for i in range(min(n, tok["n_tokens"])):
        if tok["tokens"][i] != text.get(i, tok["tokens"][i]) or tok["types"][i] != kind.get(i, "unused"):
            problem("tokenizer: token %d is %r (%s), tokenizer.json %r (%s)"
                    % (i, tok["tokens"][i], tok["types"][i], text.get(i), kind.get(i, "unused"))); break
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    got = ["%s %s" % (tok["tokens"][a], tok["tokens"][b]) for a, b in tok["merges"]]
    if got != merges:
        problem("tokenizer: merges differ from tokenizer.json (%d vs %d)" % (len(got), len(merges)))

    def tid(v):
        v = v["content"] if isinstance(v, dict) else v
        return text_ids.get(v, -1)
    text_ids = {s: i for i, s in text.items()}
    if tok["bos_id"] != tid(tc.get("bos_token")) or tok["eos_id"] != tid(tc.get("eos_token")):
        problem("tokenizer: bos/eos %d/%d, tokenizer_config %r/%r"
                % (tok["bos_id"], tok["eos_id"], tc.get("bos_token"), tc.get("eos_token")))
    if tok["chat_template"] != tc.get("chat_template"):
        problem("tokenizer: chat template differs from tokenizer_config.json")
    steps = tj["pre_tokenizer"].get("pretokenizers", [tj["pre_tokenizer"]])
    regexes = [s["pattern"]["Regex"] for s in steps if s["type"] == "Split"]
    if tok["regexes"] != regexes:
        problem("tokenizer: pre-tokenizer regexes differ from tokenizer.json")
    if cases_file:  # the byte-level alphabet: a case's ids decode to its text
        for case in json.load(open(cases_file, encoding="utf-8")):
            if b"".join(tok["token_bytes"](i) for i in case["ids"]) != case["text"].encode("utf-8"):
                problem("tokenizer: ids %s do not decode to %r" % (case["ids"][:8], case["text"][:40])); break


def check_inspect(c, insp):
    """The reader's view equals `moepack inspect --json --tensors` wherever both expose a value."""
    if insp["file_bytes"] != c.file_size or insp["tensor_count"] != len(c.tensors):
        problem("inspect: file_bytes/tensor_count differ")
    for i, name in enumerate(cr.SECTIONS):
        s = insp["sections"][name]
        if (s["offset"], s["bytes"]) != (c.section_offset[i], c.section_size[i]):
            problem("inspect: section %s %s, reader %d +%d" % (name, s, c.section_offset[i], c.section_size[i]))
    for key in ("format_version", "model", "attention", "quantization", "chat_format", "provenance", "quant_report"):
        if insp[key] != c.meta[key]:
            problem("inspect: %s differs from the metadata JSON" % key)
    rows = {t["name"]: t for t in insp["tensors"]}
    if sorted(rows) != sorted(t.name for t in c.tensors):
        problem("inspect: tensor names differ"); return
    bits = {1: 32, 2: 16, 3: 16, 4: 8, 5: 4, 6: 4}
    for t in c.tensors:
        mine = {"name": t.name, "role": cr.ROLES[t.role], "layer": t.layer, "expert": t.expert,
                "shape": list(t.logical_shape()), "padded_shape": t.padded[:t.ndim], "quant": cr.QUANTS[t.quant],
                "layout": cr.LAYOUTS[t.layout], "group_width": t.group_width, "placement": cr.SECTIONS[t.section],
                "offset": t.data_offset, "data_bytes": t.data_size, "scale_offset": t.scale_offset,
                "scale_bytes": t.scale_size, "xxh3": "%016x" % t.checksum,
                "padding_bytes": t.data_size - (math.prod(t.logical_shape()) * bits[t.quant] + 7) // 8}
        theirs = rows[t.name]
        diff = [k for k in mine if mine[k] != theirs.get(k)]
        if diff or set(theirs) != set(mine):
            problem("inspect: tensor %s: %s" % (t.name, ", ".join("%s %r vs %r" % (k, mine[k], theirs.get(k)) for k in diff)
                                                or "keys %s" % sorted(set(theirs) ^ set(mine))))
        # FORMAT.md §4: the name carries the layer (and the expert of a routed expert's tensor)
        want_layer = -1 if t.name in GLOBAL_NAMES else int(t.name.split(".")[1])
        want_expert = int(t.name.split(".")[3]) if t.role in cr.ROUTED_EXPERT_ROLES else -1
        if (t.layer, t.expert) != (want_layer, want_expert):
            problem("%s: layer %d expert %d do not match the name" % (t.name, t.layer, t.expert))


try:
    if mode == "check":  # container inspect.json source check(full|structure) cases.json
        path, insp_path, source, check, cases = sys.argv[3:8]
        c = cr.Container(path)
        check_inspect(c, json.load(open(insp_path)))
        bad = [t.name for t in c.tensors if not c.verify(t)]
        if bad:
            problem("checksum mismatch in a good file: %s" % bad[:3])
        if check == "full":
            folder = source if os.path.isdir(source) else os.path.join(os.path.dirname(source), "tiny-v3")
            cfg = json.load(open(os.path.join(folder, "config.json")))
            check_values(c, st_load(folder), cfg, "minmax" in c.meta["quantization"]["int4_fit"])
            if os.path.isdir(source):
                check_metadata(c, cfg)
                check_tokenizer(c, folder, cases if cases != "-" else None)
        else:
            for t in c.tensors:
                c.dequantize(t)
    elif mode == "hostile":  # container out-dir: writes the hostile variants
        path, out = sys.argv[3:5]
        c = cr.Container(path)
        blob = bytearray(open(path, "rb").read())
        nat = cr.Native()

        def seal(b, fix_dir=False):  # recompute the checksums so only the intended fault remains
            if fix_dir:
                (n, doff, dsz, soff, ssz) = struct.unpack_from("<QQQQQ", b, 24)
                struct.pack_into("<Q", b, 152, nat.xxh3(np.frombuffer(bytes(b[doff:doff + dsz] + b[soff:soff + ssz]), np.uint8)))
            struct.pack_into("<Q", b, 248, nat.xxh3(np.frombuffer(bytes(b[:248]), np.uint8)))
            return b

        def write(name, b):
            open(os.path.join(out, name + ".moepack"), "wb").write(bytes(b))
        write("truncated", blob[:len(blob) // 2])
        b = bytearray(blob); b[200] ^= 0x40; write("header_checksum", b)
        b = bytearray(blob); struct.pack_into("<Q", b, 4096 + 3 * 128 + 80, len(blob) + 4096); write("offset_past_end", seal(b, True))
        # n_tensors such that n x 128 wraps around 2^64 to the real dir_size
        b = bytearray(blob); struct.pack_into("<Q", b, 24, (1 << 57) + c.n_tensors); write("n_tensors_huge", seal(b))
        b = bytearray(blob); struct.pack_into("<Q", b, 64, len(blob) - 16); write("meta_past_end", seal(b))
        b = bytearray(blob); struct.pack_into("<Q", b, 96, 1 << 40); write("tok_raw_huge", seal(b))
        # role 12 (attn_kv_b) is source-only: never stored, refused on read
        b = bytearray(blob); struct.pack_into("<H", b, 4096 + 3 * 128 + 8, 12); write("role_source_only", seal(b, True))
        # tensor 3's data moved onto tensor 4's: every per-entry check and checksum still passes
        t3, t4 = c.tensors[3], c.tensors[4]
        assert t3.section == t4.section and t3.data_size <= t4.data_size
        b = bytearray(blob); struct.pack_into("<Q", b, 4096 + 3 * 128 + 80, t4.data_offset); write("overlap", seal(b, True))
        # a skippable zstd frame after the tokenizer's frame (the tokenizer ends the file)
        (tok_off, tok_size) = struct.unpack_from("<QQ", blob, 80)
        assert tok_off + tok_size == len(blob)
        b = bytearray(blob) + struct.pack("<II", 0x184D2A50, 0)
        struct.pack_into("<QQ", b, 16, len(b), c.n_tensors)
        struct.pack_into("<Q", b, 88, tok_size + 8)
        struct.pack_into("<Q", b, 168, nat.xxh3(np.frombuffer(bytes(b[tok_off:]), np.uint8)))
        write("tok_two_frames", seal(b))
        # a dimension past ndim that is not 0 (tensor 3 is a matrix: its shape[2] set to 7)
        assert c.tensors[3].ndim < 3
        b = bytearray(blob); struct.pack_into("<Q", b, 4096 + 3 * 128 + 48, 7); write("unused_dim", seal(b, True))
        # metadata of another format major version (same length, its checksum recomputed)
        (meta_off, meta_size) = struct.unpack_from("<QQ", blob, 64)
        meta = bytes(blob[meta_off:meta_off + meta_size])
        assert meta.count(b'"format_version":"1.') + meta.count(b'"format_version": "1.') == 1
        b = bytearray(blob)
        b[meta_off:meta_off + meta_size] = meta.replace(b'"format_version":"1.', b'"format_version":"2.').replace(
            b'"format_version": "1.', b'"format_version": "2.')
        struct.pack_into("<Q", b, 160, nat.xxh3(np.frombuffer(bytes(b[meta_off:meta_off + meta_size]), np.uint8)))
        write("format_version_2", seal(b))
except cr.FormatError as e:
    problem("reader refused a good file: %s" % e)
sys.exit(1 if problems else 0)
