"""`srlm chat --checkpoint DIR`: an interactive chat in the terminal (reads stdin, one message per line).

Commands: `/reset` starts a new conversation, `/exit` (or end of input) quits. Input is decoded here: a line that
is not UTF-8 is named (`stdin:N`) and skipped in a terminal, an error when stdin is a pipe or a file. The whole conversation is re-sent
each turn through the chat template; the KV cache prefills it in one batched forward, so this stays fast for the
short conversations a person types.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

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
    stdin = getattr(sys.stdin, "buffer", None)
    lineno = 0
    while True:
        if interactive:
            print("you> ", end="", flush=True)
        raw = stdin.readline() if stdin is not None else sys.stdin.readline().encode("utf-8")
        if not raw:
            break
        lineno += 1
        try:
            line = raw.decode("utf-8").rstrip("\n").rstrip("\r")
        except UnicodeDecodeError as e:
            message = f"stdin:{lineno}: not valid UTF-8 (byte 0x{raw[e.start : e.start + 1].hex()} at offset {e.start})"
            if not interactive:
                raise ValueError(message) from None
            print(f"({message}; ignored)", file=sys.stderr)
            continue
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
        result = gen.generate([ids], replace(params, seed=params.seed + turn))[0]
        turn += 1
        reply = result.text or ""
        messages.append({"role": "assistant", "content": reply})
        print(f"assistant> {reply}" if interactive else reply, flush=True)
    return 0
