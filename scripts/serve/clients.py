#!/usr/bin/env python3
"""Drive an OpenAI-compatible server (`cargo xtask serve`) with three real clients.

Checks, in order, and prints labelled results to stdout:
  a. the official `openai` client: models.list, chat completion (non-streamed
     and streamed, greedy texts must match), legacy completions (non-streamed
     and streamed), n=2 sampling with a seed;
  b. LangChain `ChatOpenAI`: invoke (system + human message) and stream;
  c. LlamaIndex `OpenAILike`: chat and complete;
  d. errors: unknown model -> 404 (openai.NotFoundError), a non-number
     temperature -> 400 (through the openai client and through raw httpx).

Exits 0 and prints `ALL CLIENT CHECKS PASSED` when everything works; otherwise
prints each failure and exits 1.

Setup (a venv outside the repo, pinned versions in requirements.txt beside this file):
    python3 -m venv /opt/servevenv
    /opt/servevenv/bin/pip install -r scripts/serve/requirements.txt

Usage (with the server running, e.g. `cargo xtask serve ...` on port 8080):
    /opt/servevenv/bin/python scripts/serve/clients.py --model MODEL_NAME \
        [--base-url http://127.0.0.1:8080/v1] [--max-tokens 24] [--timeout 300]
"""
import argparse
import sys
import traceback

import httpx
import openai

FAILURES = []

USER_PROMPT = "Write one sentence about llamas."
SYSTEM_PROMPT = "You are a helpful assistant. Answer briefly."
COMPLETION_PROMPT = "The capital of France is"


def header(title):
    print()
    print("=" * 72)
    print(title)
    print("=" * 72, flush=True)


def fail(name, msg):
    FAILURES.append(f"{name}: {msg}")
    print(f"  FAIL [{name}]: {msg}", flush=True)


def ok(name, msg=""):
    print(f"  ok   [{name}]{(' ' + msg) if msg else ''}", flush=True)


def run(name, fn, *args):
    """Run one check; any exception counts as a failure of that check."""
    print(f"\n--- {name}", flush=True)
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001 - every exception is a failed check here
        fail(name, f"{type(e).__name__}: {e}")
        traceback.print_exc(file=sys.stdout)


def expect(name, cond, msg):
    if cond:
        ok(name, msg)
    else:
        fail(name, msg)


# --------------------------------------------------------------------------
# a. official openai client
# --------------------------------------------------------------------------

def openai_checks(a):
    client = openai.OpenAI(base_url=a.base_url, api_key="unused", timeout=a.timeout, max_retries=0)
    state = {}

    def models():
        resp = client.models.list()
        ids = [m.id for m in resp.data]
        print(f"  model ids: {ids}")
        expect("models.list", a.model in ids, f"{a.model!r} listed")

    def chat():
        r = client.chat.completions.create(
            model=a.model, messages=[{"role": "user", "content": USER_PROMPT}],
            temperature=0, max_tokens=a.max_tokens)
        c = r.choices[0]
        print(f"  content:       {c.message.content!r}")
        print(f"  finish_reason: {c.finish_reason}")
        print(f"  usage:         {r.usage}")
        state["chat"] = c.message.content
        expect("chat.completions", isinstance(c.message.content, str) and c.message.content != "",
               "non-empty content")
        expect("chat.completions", c.finish_reason in ("stop", "length"), f"finish_reason={c.finish_reason}")
        expect("chat.completions", r.usage is not None and r.usage.completion_tokens > 0, "usage present")

    def chat_stream():
        stream = client.chat.completions.create(
            model=a.model, messages=[{"role": "user", "content": USER_PROMPT}],
            temperature=0, max_tokens=a.max_tokens, stream=True,
            stream_options={"include_usage": True})
        parts, n_chunks, finish, usage = [], 0, None, None
        for chunk in stream:
            n_chunks += 1
            if chunk.usage is not None:
                usage = chunk.usage
            for ch in chunk.choices:
                if ch.delta and ch.delta.content:
                    parts.append(ch.delta.content)
                if ch.finish_reason:
                    finish = ch.finish_reason
        text = "".join(parts)
        print(f"  streamed text: {text!r}")
        print(f"  chunks:        {n_chunks}")
        print(f"  finish_reason: {finish}")
        print(f"  usage chunk:   {usage}")
        expect("chat.completions stream", finish in ("stop", "length"), f"finish_reason={finish}")
        if "chat" not in state:
            fail("chat.completions stream", "no non-streamed text to compare with")
        else:
            expect("chat.completions stream", text == state["chat"],
                   "streamed text == non-streamed text (temperature 0)")

    def completions():
        r = client.completions.create(model=a.model, prompt=COMPLETION_PROMPT,
                                      temperature=0, max_tokens=a.max_tokens)
        c = r.choices[0]
        print(f"  text:          {c.text!r}")
        print(f"  finish_reason: {c.finish_reason}")
        print(f"  usage:         {r.usage}")
        state["cmpl"] = c.text
        expect("completions", isinstance(c.text, str) and c.text != "", "non-empty text")

    def completions_stream():
        stream = client.completions.create(model=a.model, prompt=COMPLETION_PROMPT,
                                           temperature=0, max_tokens=a.max_tokens, stream=True)
        parts, n_chunks, finish = [], 0, None
        for chunk in stream:
            n_chunks += 1
            for ch in chunk.choices:
                parts.append(ch.text or "")
                if ch.finish_reason:
                    finish = ch.finish_reason
        text = "".join(parts)
        print(f"  streamed text: {text!r}")
        print(f"  chunks:        {n_chunks}, finish_reason: {finish}")
        if "cmpl" in state:
            expect("completions stream", text == state["cmpl"],
                   "streamed text == non-streamed text (temperature 0)")

    def n2():
        r = client.chat.completions.create(
            model=a.model, messages=[{"role": "user", "content": USER_PROMPT}],
            temperature=0.8, seed=1234, n=2, max_tokens=a.max_tokens)
        for c in r.choices:
            print(f"  choice {c.index}: {c.message.content!r} (finish_reason={c.finish_reason})")
        print(f"  usage: {r.usage}")
        expect("n=2", sorted(c.index for c in r.choices) == [0, 1], f"{len(r.choices)} choices, indexes 0 and 1")

    run("openai: models.list", models)
    run("openai: chat.completions (temperature 0)", chat)
    run("openai: chat.completions stream=True (temperature 0)", chat_stream)
    run("openai: completions (legacy, temperature 0)", completions)
    run("openai: completions stream=True (legacy, temperature 0)", completions_stream)
    run("openai: chat.completions n=2, temperature 0.8, seed 1234", n2)


# --------------------------------------------------------------------------
# b. LangChain
# --------------------------------------------------------------------------

def langchain_checks(a):
    from langchain_core.messages import HumanMessage, SystemMessage
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=a.base_url, api_key="unused", model=a.model, temperature=0,
                     max_tokens=a.max_tokens, timeout=a.timeout, max_retries=0)
    msgs = [SystemMessage(content=SYSTEM_PROMPT), HumanMessage(content=USER_PROMPT)]
    state = {}

    def invoke():
        r = llm.invoke(msgs)
        print(f"  content:        {r.content!r}")
        print(f"  token_usage:    {r.response_metadata.get('token_usage')}")
        print(f"  finish_reason:  {r.response_metadata.get('finish_reason')}")
        print(f"  usage_metadata: {r.usage_metadata}")
        state["text"] = r.content
        expect("langchain invoke", isinstance(r.content, str) and r.content != "", "non-empty content")
        expect("langchain invoke", bool(r.response_metadata.get("token_usage")), "token usage present")

    def stream():
        chunks = list(llm.stream(msgs))
        text = "".join(c.content for c in chunks if isinstance(c.content, str))
        print(f"  streamed text:  {text!r}")
        print(f"  chunks:         {len(chunks)}")
        if "text" in state:
            expect("langchain stream", text == state["text"], "streamed text == invoke text (temperature 0)")

    run("langchain: ChatOpenAI.invoke", invoke)
    run("langchain: ChatOpenAI.stream", stream)


# --------------------------------------------------------------------------
# c. LlamaIndex
# --------------------------------------------------------------------------

def llamaindex_checks(a):
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai_like import OpenAILike

    llm = OpenAILike(api_base=a.base_url, api_key="unused", model=a.model, is_chat_model=True,
                     context_window=2048, max_tokens=a.max_tokens, temperature=0,
                     timeout=a.timeout, max_retries=0)

    def chat():
        r = llm.chat([ChatMessage(role="user", content=USER_PROMPT)])
        text = r.message.content
        print(f"  chat text:     {text!r}")
        expect("llamaindex chat", isinstance(text, str) and text != "", "non-empty text")

    def complete():
        r = llm.complete(COMPLETION_PROMPT)
        print(f"  complete text: {r.text!r}")
        expect("llamaindex complete", isinstance(r.text, str) and r.text != "", "non-empty text")

    run("llamaindex: OpenAILike.chat", chat)
    run("llamaindex: OpenAILike.complete", complete)


# --------------------------------------------------------------------------
# d. errors
# --------------------------------------------------------------------------

def error_checks(a):
    client = openai.OpenAI(base_url=a.base_url, api_key="unused", timeout=a.timeout, max_retries=0)
    bad_model = a.model + "-does-not-exist"

    def unknown_model():
        try:
            client.chat.completions.create(model=bad_model, messages=[{"role": "user", "content": "hi"}],
                                           temperature=0, max_tokens=4)
        except openai.APIStatusError as e:
            print(f"  status:  {e.status_code} ({type(e).__name__})")
            print(f"  message: {e.message}")
            expect("unknown model", isinstance(e, openai.NotFoundError) or 400 <= e.status_code < 500,
                   f"4xx ({e.status_code})")
            return
        fail("unknown model", "request succeeded, expected 404")

    def bad_temperature_openai():
        try:
            client.chat.completions.create(model=a.model, messages=[{"role": "user", "content": "hi"}],
                                           max_tokens=4, extra_body={"temperature": "hot"})
        except openai.APIStatusError as e:
            print(f"  status:  {e.status_code} ({type(e).__name__})")
            print(f"  message: {e.message}")
            expect("bad temperature (openai)", e.status_code == 400, f"status {e.status_code}")
            return
        fail("bad temperature (openai)", "request succeeded, expected 400")

    def bad_temperature_httpx():
        r = httpx.post(a.base_url.rstrip("/") + "/chat/completions", timeout=a.timeout,
                       json={"model": a.model, "messages": [{"role": "user", "content": "hi"}],
                             "temperature": "hot", "max_tokens": 4})
        print(f"  status:  {r.status_code}")
        print(f"  body:    {r.text[:500]}")
        expect("bad temperature (httpx)", r.status_code == 400, f"status {r.status_code}")
        try:
            err = r.json()["error"]
            msg_ok = isinstance(err.get("message"), str) and "type" in err
        except Exception:  # noqa: BLE001
            msg_ok = False
        expect("bad temperature (httpx)", msg_ok, 'body is {"error": {"message": ..., "type": ...}}')

    run("errors: unknown model -> 404", unknown_model)
    run("errors: temperature=\"hot\" via openai extra_body -> 400", bad_temperature_openai)
    run("errors: temperature=\"hot\" via raw httpx POST -> 400", bad_temperature_httpx)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", default="http://127.0.0.1:8080/v1")
    ap.add_argument("--model", required=True, help="model name the server lists at /v1/models")
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--timeout", type=float, default=300.0, help="per-request timeout in seconds")
    a = ap.parse_args()

    header(f"a. openai {openai.__version__}  base_url={a.base_url}  model={a.model}")
    openai_checks(a)
    header("b. LangChain ChatOpenAI")
    run("langchain: import + construct ChatOpenAI", langchain_checks, a)
    header("c. LlamaIndex OpenAILike")
    run("llamaindex: import + construct OpenAILike", llamaindex_checks, a)
    header("d. error handling")
    error_checks(a)

    print()
    if FAILURES:
        print(f"{len(FAILURES)} CLIENT CHECK(S) FAILED:")
        for f in FAILURES:
            print(f"  - {f}")
        sys.exit(1)
    print("ALL CLIENT CHECKS PASSED")


if __name__ == "__main__":
    main()
