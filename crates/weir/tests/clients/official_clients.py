"""The official OpenAI and Anthropic Python clients as real clients of Weir.

Usage: official_clients.py BASE_URL KEY. Weir serves model "gpt" from an OpenAI-compatible
provider, "claude" from an Anthropic one and "gemini" from a Gemini one (all fakes); every
check runs against each.
Exits non-zero with the first failed check.
"""
import json
import sys

import anthropic
import openai

base, key = sys.argv[1], sys.argv[2]
oa = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)
an = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)
weather = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}

for model in ["gpt", "claude", "gemini"]:
    chat = oa.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert chat.choices[0].message.content, chat
    assert chat.usage.prompt_tokens > 0 and chat.usage.completion_tokens > 0, chat.usage

    parts = []
    usage = None
    for chunk in oa.chat.completions.create(model=model, stream=True, stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": "hi"}]):
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage
    assert "".join(parts) == chat.choices[0].message.content, parts
    assert usage and usage.completion_tokens > 0, usage

    tools = oa.chat.completions.create(model=model, messages=[{"role": "user", "content": "weather in Oslo?"}], tools=[weather])
    call = tools.choices[0].message.tool_calls[0]
    assert tools.choices[0].finish_reason == "tool_calls", tools
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Oslo"}, call

    args = ""
    for chunk in oa.chat.completions.create(model=model, stream=True, messages=[{"role": "user", "content": "weather?"}], tools=[weather]):
        for tc in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            args += tc.function.arguments or ""
    assert json.loads(args) == {"city": "Oslo"}, args

    msg = an.messages.create(model=model, max_tokens=64, messages=[{"role": "user", "content": "hi"}])
    assert msg.content[0].type == "text" and msg.content[0].text, msg
    assert msg.usage.output_tokens > 0, msg.usage

    with an.messages.stream(model=model, max_tokens=64, messages=[{"role": "user", "content": "hi"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == msg.content[0].text, (text, msg)
    assert final.usage.output_tokens > 0, final.usage

    tool_msg = an.messages.create(model=model, max_tokens=64, messages=[{"role": "user", "content": "weather?"}],
                                  tools=[{"name": "get_weather", "input_schema": {"type": "object"}}])
    uses = [b for b in tool_msg.content if b.type == "tool_use"]
    assert tool_msg.stop_reason == "tool_use" and uses[0].input == {"city": "Oslo"}, tool_msg

    print(f"{model}: chat, stream, tools, messages ok")

emb = oa.embeddings.create(model="embed", input=["a", "b"])
assert len(emb.data) == 2 and len(emb.data[0].embedding) == 3, emb
models = [m.id for m in oa.models.list()]
assert models == ["gpt", "claude", "gemini", "embed"], models
try:
    oa.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    raise AssertionError("an unknown model must fail")
except openai.NotFoundError as e:
    assert e.status_code == 404
try:
    anthropic.Anthropic(base_url=base, api_key="wrong-key", max_retries=0).messages.create(
        model="claude", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    raise AssertionError("a wrong key must fail")
except anthropic.AuthenticationError as e:
    assert e.status_code == 401
print("embeddings, models, errors ok")
