import torch, json, sys, time
from transformers import AutoModelForCausalLM
from safetensors import safe_open
d = sys.argv[1]
f = safe_open(d + '/tiny-v3.reference.safetensors', 'pt')
P = [(f.get_tensor(f'prompt{i}.ids').long(), f.get_tensor(f'prompt{i}.greedy').long()) for i in range(6)]
def score(name, outs):
    tot = 0; s = []
    for (ids, g), o in zip(P, outs):
        m = [int(a) == int(b) for a, b in zip(o[:32], g)]; tot += sum(m); s.append(''.join('.' if x else 'x' for x in m))
    print(name, tot, ' '.join(s), flush=True)
for dev in ['cpu', 'cuda']:
  for dt in [torch.float32, torch.bfloat16]:
    m = AutoModelForCausalLM.from_pretrained(d + '/tiny-v3', torch_dtype=dt).to(dev).eval()
    outs = []
    with torch.no_grad():
        for ids, g in P:
            o = m.generate(ids[None].to(dev), max_new_tokens=32, min_new_tokens=32, do_sample=False, eos_token_id=None, pad_token_id=2)
            outs.append(o[0, len(ids):].cpu())
    score(f'{dev} {dt} single', outs)
    # full-forward argmax on the reference continuation (teacher forcing)
    outs = []
    with torch.no_grad():
        for ids, g in P:
            seq = torch.cat([ids, g])[None].to(dev)
            lg = m(seq).logits[0].float()
            outs.append(lg[len(ids)-1:len(ids)+31].argmax(-1).cpu())
    score(f'{dev} {dt} forced', outs)
    # no cache
    outs = []
    with torch.no_grad():
        for ids, g in P:
            o = m.generate(ids[None].to(dev), max_new_tokens=32, min_new_tokens=32, do_sample=False, eos_token_id=None, pad_token_id=2, use_cache=False)
            outs.append(o[0, len(ids):].cpu())
    score(f'{dev} {dt} nocache', outs)
    # batched, left padded
    L = max(len(i) for i, _ in P)
    batch = torch.full((6, L), 2, dtype=torch.long); mask = torch.zeros((6, L), dtype=torch.long)
    for k, (ids, g) in enumerate(P): batch[k, L-len(ids):] = ids; mask[k, L-len(ids):] = 1
    with torch.no_grad():
        o = m.generate(batch.to(dev), attention_mask=mask.to(dev), max_new_tokens=32, min_new_tokens=32, do_sample=False, eos_token_id=None, pad_token_id=2)
    score(f'{dev} {dt} batched', [o[k, L:].cpu() for k in range(6)])
import transformers; print(transformers.__version__, torch.__version__)
