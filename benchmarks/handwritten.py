"""The hand-written models, optimizer and steps that the launcher is measured against:
torchtune's Llama 3 with a scalar head (or its LM head), AdamW grouped as build_adamw groups,
Bradley-Terry on the reward at each row's last real token (or the mean cross-entropy over the
completion tokens), global-norm clipping at 1, every row padded to the batch's longest.
Nothing from the library's training code.
"""

import torch
import torch.nn.functional as F


def build(num_layers, embed_dim, num_heads, intermediate_dim, max_length, compile_blocks,
          head="reward"):
    """(model, optimizer): torchtune's Llama 3 with a scalar head ("reward") or its LM head
    ("lm"), AdamW as build_adamw groups."""
    from torchtune.models.llama3 import llama3

    torch.manual_seed(0)
    model = llama3(vocab_size=512, num_layers=num_layers, num_heads=num_heads,
                   num_kv_heads=num_heads, embed_dim=embed_dim, max_seq_len=max_length,
                   intermediate_dim=intermediate_dim)
    if head == "reward":
        model.output = torch.nn.Linear(embed_dim, 1, bias=False)
    if compile_blocks:
        for layer in model.layers:
            layer.forward = torch.compile(layer.forward)  # as lib/parallel.py does
    params = list(model.parameters())
    opt = torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.01},
                             {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
                            lr=1e-4)
    return model, opt


def step(model, opt, batch):
    """One optimizer step on a collated batch (chosen rows, then rejected rows)."""
    mask = batch["attention_mask"]
    out = model(batch["tokens"])
    last = (torch.arange(mask.shape[1]) * mask).argmax(-1)
    rewards = out[torch.arange(out.shape[0]), last, 0]
    n = rewards.shape[0] // 2
    loss = -F.logsigmoid(rewards[:n] - rewards[n:]).mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def pad_examples(examples, pad_id):
    """(tokens [b, longest], targets [b, longest]): right-padded SFT examples, the targets the
    next completion token (-100 elsewhere)."""
    longest = max(len(e.tokens) for e in examples)
    tokens = torch.full((len(examples), longest), pad_id, dtype=torch.long)
    targets = torch.full((len(examples), longest), -100, dtype=torch.long)
    for i, e in enumerate(examples):
        tokens[i, :len(e.tokens)] = torch.tensor(e.tokens)
        targets[i, e.prompt_length - 1:len(e.tokens) - 1] = torch.tensor(
            e.tokens[e.prompt_length:])
    return tokens, targets


def sft_step(model, opt, tokens, targets):
    """One optimizer step of SFT: the mean cross-entropy over the completion tokens."""
    logits = model(tokens)
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=-100)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
