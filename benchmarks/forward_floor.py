"""What a leaner forward pass could save: transformers' batch-of-one decode step against a minimal eager one.

The routed run makes about seven times the forward passes of plain decoding (routing_overhead.py), and on
this CPU a tiny model's forward costs mostly its fixed price: Python and op dispatch, not arithmetic. This
script times a decode step of the testbed's weak model through transformers and through a minimal eager
PyTorch step with the same weights and ops (no module machinery, its own K/V buffers), checks that both
give the same logits, and prints how much of transformers' fixed cost per forward a hand-written eager
step would save.

    python benchmarks/forward_floor.py [--steps 200]
"""

import torch
import torch.nn.functional as F
from _common import Timer, load, parse_args

from trim.backends.prefix_cache import roomy_cache


class MinimalDecoder:
    """The Llama decode step of `model`, written out: RMSNorm, rotary attention, SwiGLU MLP."""

    def __init__(self, model, batch: int, capacity: int):
        config, self.model = model.config, model
        self.heads = config.num_attention_heads
        if getattr(config, "num_key_value_heads", self.heads) != self.heads:
            raise ValueError("this step is written for models without grouped-query attention (the testbed's)")
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.eps = config.rms_norm_eps
        theta = getattr(config, "rope_theta", None) or config.rope_parameters["rope_theta"]
        self.inverse = 1.0 / theta ** (torch.arange(0, self.head_dim, 2).float() / self.head_dim)
        shape = (batch, self.heads, capacity, self.head_dim)
        self.keys = [torch.zeros(shape) for _ in model.model.layers]
        self.values = [torch.zeros(shape) for _ in model.model.layers]

    def norm(self, x, weight):
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))

    def rotate(self, x, cos, sin):
        half = self.head_dim // 2
        return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin

    def step(self, tokens: torch.Tensor, position: int) -> torch.Tensor:
        batch = tokens.shape[0]
        x = self.model.model.embed_tokens(tokens)
        angles = torch.cat([position * self.inverse] * 2)
        cos, sin = angles.cos(), angles.sin()
        for layer, keys, values in zip(self.model.model.layers, self.keys, self.values):
            attention, mlp = layer.self_attn, layer.mlp
            h = self.norm(x, layer.input_layernorm.weight)
            q, k, v = (F.linear(h, p.weight).view(batch, 1, self.heads, self.head_dim).transpose(1, 2)
                       for p in (attention.q_proj, attention.k_proj, attention.v_proj))
            keys[:, :, position] = self.rotate(k, cos, sin)[:, :, 0]
            values[:, :, position] = v[:, :, 0]
            o = F.scaled_dot_product_attention(self.rotate(q, cos, sin), keys[:, :, : position + 1],
                                               values[:, :, : position + 1])
            x = x + F.linear(o.transpose(1, 2).reshape(batch, 1, -1), attention.o_proj.weight)
            h = self.norm(x, layer.post_attention_layernorm.weight)
            x = x + F.linear(F.silu(F.linear(h, mlp.gate_proj.weight)) * F.linear(h, mlp.up_proj.weight),
                             mlp.down_proj.weight)
        return F.linear(self.norm(x, self.model.model.norm.weight), self.model.lm_head.weight)


def main():
    args = parse_args(__doc__, 1, k=False, steps=200)
    tb, _ = load(1)
    model = tb.weak.model
    prompt = torch.randint(5, 300, (1, 64), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        cache = roomy_cache(model.config.num_hidden_layers, args.steps + 1)
        theirs = [model(input_ids=prompt, past_key_values=cache, use_cache=True).logits[:, -1:]]
        minimal = MinimalDecoder(model, 1, prompt.shape[1] + args.steps + 1)
        ours = [minimal.step(prompt[:, t: t + 1], t) for t in range(prompt.shape[1])][-1:]
        tokens = [logits.argmax(-1) for logits in theirs]
        with Timer() as transformers_time:
            for t in range(args.steps):
                position = torch.tensor([[prompt.shape[1] + t]])
                theirs.append(model(input_ids=tokens[t], past_key_values=cache, use_cache=True,
                                    position_ids=position).logits)
                tokens.append(theirs[-1].argmax(-1))
        with Timer() as minimal_time:
            for t in range(args.steps):
                ours.append(minimal.step(tokens[t], prompt.shape[1] + t))
    same = all(torch.allclose(a, b, atol=1e-4) for a, b in zip(theirs, ours))
    per_step = [transformers_time.seconds / args.steps * 1e3, minimal_time.seconds / args.steps * 1e3]
    print(f"decode step of the weak model at batch 1: transformers {per_step[0]:.2f} ms, minimal eager "
          f"{per_step[1]:.2f} ms ({per_step[0] - per_step[1]:.2f} ms less); same logits: {same}")


if __name__ == "__main__":
    main()
