"""`srlm chat --checkpoint DIR`: an interactive chat in the terminal (reads stdin, one message per line).

Commands: `/reset` starts a new conversation, `/exit` (or end of input) quits. The whole conversation is re-sent
each turn through the chat template; the KV cache prefills it in one batched forward, so this stays fast for the
short conversations a person types.
"""

from __future__ import annotations

import argparse
import sys

from srlm_fast.commands.generate import add_sampling_arguments, load_generator, sampling_params

HELP = "chat with a checkpoint interactively (stdin/stdout)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_sampling_arguments(parser)


def main(args: argparse.Namespace) -> int:
    gen, tok = load_generator(args)
    params = sampling_params(args)
    interactive = sys.stdin.isatty()
    messages: list[dict] = [{"role": "system", "content": args.system}] if args.system else []
    if interactive:
        print("srlm chat: type a message; /reset for a new conversation, /exit to quit.", file=sys.stderr)
    turn = 0
    while True:
        if interactive:
            print("you> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line:
            break
        line = line.rstrip("\n")
        if line.strip() == "/exit":
            break
        if line.strip() == "/reset":
            messages = messages[:1] if args.system else []
            continue
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line})
        ids = tok.encode_chat(messages, add_generation_prompt=True)[0]
        if len(ids) >= gen.max_len:
            print(
                f"(conversation is {len(ids)} tokens, over the limit of {gen.max_len}; /reset)",
                file=sys.stderr,
            )
            messages.pop()
            continue
        # A different seed each turn, reproducible from --seed.
        from dataclasses import replace

        result = gen.generate([ids], replace(params, seed=params.seed + turn))[0]
        turn += 1
        reply = result.text or ""
        messages.append({"role": "assistant", "content": reply})
        print(f"assistant> {reply}" if interactive else reply, flush=True)
    return 0
