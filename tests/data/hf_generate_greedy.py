import torch, json, sys
from transformers import AutoModelForCausalLM
from safetensors import safe_open
d = sys.argv[1]
f = safe_open(d + '/tiny-v3.reference.safetensors', 'pt')
m = AutoModelForCausalLM.from_pretrained(d + '/tiny-v3', dtype=torch.float32).eval()
out = {"generator": "transformers %s, torch %s: AutoModelForCausalLM.from_pretrained(tiny-v3, dtype=float32) on CPU, generate(ids, max_new_tokens=32, min_new_tokens=32, do_sample=False, eos_token_id=None)" % (__import__('transformers').__version__, torch.__version__), "greedy": {}, "reference_greedy": {}}
with torch.no_grad():
    for i in range(6):
        ids = f.get_tensor(f'prompt{i}.ids').long()
        o = m.generate(ids[None], max_new_tokens=32, min_new_tokens=32, do_sample=False, eos_token_id=None, pad_token_id=2)
        out["greedy"][f"prompt{i}"] = [int(x) for x in o[0, len(ids):]]
        out["reference_greedy"][f"prompt{i}"] = [int(x) for x in f.get_tensor(f'prompt{i}.greedy')]
print("JSON" + json.dumps(out))
